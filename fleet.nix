# The fleet, as one static table: which machines there are, where the LAN reaches them, and
# what each does. Plain data (no module, no nixpkgs): flake.nix reads it for the hosts it builds
# and for the scrape targets of hydra-storage's Prometheus, the hosts for their own address and
# for the addresses of the others. Edit it when a machine joins, moves or changes its job.
{
  # The ports every NixOS host serves to the fleet's Prometheus servers.
  scrapePorts = {
    hydra-gpu-exporter = 9445;
    hydra-health = 9446;
  };

  hosts = {
    hydra-ai = {
      # Name or IP at which the LAN reaches the host (LAN DNS resolves the names).
      address = "hydra-ai";
      # A NixOS host of this flake (nixosConfigurations.<name>, hosts/<name>/).
      nixos = true;
      roles = [ "inference" ];
    };
    hydra-compute = {
      address = "hydra-compute";
      nixos = true;
      roles = [
        "inference"
        "images"
      ];
    };
    l = {
      address = "l";
      nixos = true;
      roles = [
        "inference"
        "gateway"
        "monitoring"
      ];
    };
    # Unraid, not NixOS: Prometheus, Grafana, Redis (the agents' alert stream) and n8n.
    hydra-storage = {
      address = "hydra-storage";
      nixos = false;
      roles = [
        "storage"
        "alerts"
      ];
    };
  };
}
