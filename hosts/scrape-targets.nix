# The fleet's scrape targets in Prometheus file_sd format, from the host configurations: each
# host's GPU exporter and health agent, at the address the LAN knows it by, labelled with host
# and job. Written to a file for hydra-storage (`packages.x86_64-linux.scrape-targets`) and
# used by l's Prometheus.
{ lib }:

nixosConfigurations:
let
  targetsOf =
    system:
    let
      cfg = system.config;
      target = job: port: {
        targets = [ "${cfg.hydra.fleet.address}:${toString port}" ];
        labels = {
          inherit job;
          host = cfg.networking.hostName;
        };
      };
      exporter = cfg.services.hydra-gpu-exporter;
      agent = cfg.services.hydra-health;
    in
    lib.concatLists [
      (lib.optional exporter.enable (target "hydra-gpu-exporter" exporter.port))
      (lib.optional agent.enable (target "hydra-health" agent.port))
    ];
in
lib.concatMap targetsOf (builtins.attrValues nixosConfigurations)
