# What every hydra host shares: remote administration for `make deploy`, flakes, and the two
# fleet services (GPU exporter, health agent) reachable by hydra-storage's Prometheus.
{
  config,
  lib,
  ...
}:

let
  fleet = import ../fleet.nix;
  monitoringHost = lib.findFirst (
    host: lib.elem "monitoring" host.roles
  ) (throw "fleet.nix: no host has the monitoring role") (lib.attrValues fleet.hosts);
  # (NixOS always defines root; the fallback is for evaluators that do not.)
  rootKeys =
    config.users.users.root.openssh.authorizedKeys or {
      keys = [ ];
      keyFiles = [ ];
    };
in
{
  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    trusted-users = [
      "root"
      "@wheel"
    ];
  };

  # Key-only SSH: `make deploy` and `nixos-rebuild --target-host` log in as root. Keys go in
  # users.users.root.openssh.authorizedKeys.keys (public keys are not secrets).
  services.openssh = {
    enable = true;
    openFirewall = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  # Key-only root login without a key locks out `make deploy` and remote rebuilds.
  warnings =
    lib.optional
      (
        config.services.openssh.settings.PermitRootLogin == "prohibit-password"
        && rootKeys.keys == [ ]
        && rootKeys.keyFiles == [ ]
      )
      "${config.networking.hostName}: root may log in over SSH with a key only, but users.users.root.openssh.authorizedKeys has no key; add the operator's public key there, or `make deploy` and nixos-rebuild --target-host cannot log in.";

  networking.firewall.enable = true;

  # Scraped over the LAN by hydra-storage's Prometheus and by l's: listen on every address and
  # open exactly these two ports.
  services.hydra-gpu-exporter = {
    enable = true;
    listenAddress = "0.0.0.0";
    # The port the fleet table's scrape targets name.
    port = fleet.scrapePorts.hydra-gpu-exporter;
    openFirewall = true;
  };

  services.hydra-health = {
    enable = true;
    listenAddress = "0.0.0.0";
    port = fleet.scrapePorts.hydra-health;
    openFirewall = true;
    # Alerts go to the Redis on hydra-storage, where the operator's n8n reads the stream. If
    # that Redis needs a password, set alerts.redis.passwordFile = "/run/secrets/...".
    alerts.redis.url = "redis://${fleet.hosts.hydra-storage.address}:6379/0";
    # ...and to the Alertmanager of the fleet's monitoring host, which pages the operator (the
    # monitoring host itself reaches its own on loopback: roles/monitoring.nix).
    alerts.alertmanager.url = lib.mkDefault "http://${monitoringHost.address}:9093";
  };

  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.systemd-boot.configurationLimit = lib.mkDefault 20;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
}
