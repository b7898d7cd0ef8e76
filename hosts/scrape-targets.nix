# The fleet's scrape targets in Prometheus file_sd format, from the static fleet table
# (../fleet.nix): each NixOS host's GPU exporter and health agent, at the address the LAN knows
# it by, labelled with host and job. Written to a file for hydra-storage
# (`packages.x86_64-linux.scrape-targets`) and scraped by the monitoring role.
{ lib }:

fleet:
let
  nixosHosts = lib.filterAttrs (_: host: host.nixos) fleet.hosts;
  targetsOf =
    name: host:
    lib.mapAttrsToList (job: port: {
      targets = [ "${host.address}:${toString port}" ];
      labels = {
        inherit job;
        host = name;
      };
    }) fleet.scrapePorts;
in
lib.concatLists (lib.mapAttrsToList targetsOf nixosHosts)
