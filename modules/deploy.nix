# What `hydra-deploy` needs on a host: the command itself (the host's side of a deploy and its
# dead-man rescue run it from the operator's copy when there is one, else from here), its
# state directory (the deploy lock, the deploy in progress, the results the operator reads),
# and /etc/hydra-deploy/host.json, which tells the gate of a new system whether that system
# runs the health agent and where its /healthz answers. It adds no unit: everything a deploy
# runs on the host is a transient unit of that deploy.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.hydra.deploy;
  inherit (import ./lib/addresses.nix { inherit lib; }) localHost;
  health = lib.attrByPath [ "services" "hydra-health" ] { enable = false; } config;
  healthOn = health.enable or false;
  agentHost = localHost (health.listenAddress or "127.0.0.1");
  agentUrlHost = if lib.hasInfix ":" agentHost then "[${agentHost}]" else agentHost;
  hostSettings = {
    agent =
      if healthOn then
        {
          unit = "hydra-health.service";
          healthz = "http://${agentUrlHost}:${toString (health.port or 9446)}/healthz";
        }
      else
        null;
  };
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
