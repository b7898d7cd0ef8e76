# What `hydra-deploy` needs on a host: the command itself (the host's side of a deploy and its
# dead-man rescue run it from the operator's copy when there is one, else from here), its
# state directory (the deploy lock, the deploy in progress, the results the operator reads),
# and /etc/hydra-deploy/host.json, which tells the gate of a new system whether that system
# runs the health agent and where its /healthz answers (the agent's module says so through
# {option}`hydra.deploy.agent`; this module reads no other service). It adds no unit: everything a deploy
# runs on the host is a transient unit of that deploy.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.hydra.deploy;
  hostSettings.agent = cfg.agent;
in
{
  options.hydra.deploy = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Prepare this host for `hydra-deploy`: the command on PATH, its state directory
        /var/lib/hydra-deploy, and /etc/hydra-deploy/host.json for the deploy gate.
      '';
    };
    package = lib.mkPackageOption pkgs "hydra-fleet" { };
    agent = lib.mkOption {
      type = lib.types.nullOr (
        lib.types.submodule {
          options = {
            unit = lib.mkOption {
              type = lib.types.str;
              description = "The health agent's unit, which must be active for the gate to pass.";
            };
            healthz = lib.mkOption {
              type = lib.types.str;
              description = "URL of the agent's /healthz as seen from the host itself.";
            };
          };
        }
      );
      default = null;
      description = ''
        The health agent the deploy gate asks, set by the agent's own module
        (services.hydra-health) when it is enabled; null gates a switch on activation and on
        every unit being active.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
    environment.etc."hydra-deploy/host.json".source =
      (pkgs.formats.json { }).generate "hydra-deploy-host.json" hostSettings;
    # Readable by the operator's login (results hold no secrets); written by root only.
    systemd.tmpfiles.rules = [
      "d /var/lib/hydra-deploy 0755 root root -"
      "d /var/lib/hydra-deploy/results 0755 root root 30d"
    ];
  };
}
