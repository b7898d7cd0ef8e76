# What every hydra host shares: remote administration for `make deploy`, flakes, and the two
# fleet services (GPU exporter, health agent) reachable by hydra-storage's Prometheus.
{ lib, ... }:

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

  networking.firewall.enable = true;

  # Scraped over the LAN by hydra-storage's Prometheus and by l's: listen on every address and
  # open exactly these two ports.
  services.hydra-gpu-exporter = {
    enable = true;
    listenAddress = "0.0.0.0";
    openFirewall = true;
  };

  services.hydra-health = {
    enable = true;
    listenAddress = "0.0.0.0";
    openFirewall = true;
    # Alerts go to the Redis on hydra-storage, where the operator's n8n reads the stream. If
    # that Redis needs a password, set alerts.redis.passwordFile = "/run/secrets/...".
    alerts.redis.url = "redis://hydra-storage:6379/0";
  };

  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.systemd-boot.configurationLimit = lib.mkDefault 20;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
}
