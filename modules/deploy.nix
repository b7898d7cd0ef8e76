# What `hydra-deploy` needs on a host: the command itself (the host's side of a deploy and its
# dead-man rescue run it from the operator's copy when there is one, else from here), its
# state directory (the deploy lock, the deploy in progress, the results the operator reads),
# /etc/hydra-deploy/host.json, which tells the gate of a new system whether that system runs
# the health agent and where its /healthz answers, and a unit that, at boot, resolves a deploy
# a restart cut short (the host booted its boot default; the profile is put back if it moved).
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
    systemd.services.hydra-deploy-recover = {
      description = "Resolve a hydra-deploy that a restart cut short";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      # Done before the operator's ssh can ask for the result.
      before = [ "sshd.service" ];
      # Started by a deploy's own activation too; it then finds the lock held and does nothing.
      restartIfChanged = false;
      path = [ config.nix.package ]; # nix-env, to put the profile back
      unitConfig.ConditionPathExists = "/var/lib/hydra-deploy/current.json";
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe' cfg.package "hydra-deploy"} host recover";
        # The result is for the operator; a deploy rolled back at boot is not a failed unit.
        SuccessExitStatus = "2 3";
      };
    };
  };
}
