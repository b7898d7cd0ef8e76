# The template every hydra service is built from, so each contract is written once:
#
# - `listenerOptions`/`listenersConfig`: `listenAddress`, `port`, `openFirewall` and
#   `firewallInterfaces`, the firewall rule, and the assertion that an opened port is not
#   bound to loopback only;
# - `mkUnit`: the systemd unit with the shared sandbox (./hardening.nix), restart policy, start
#   limits and exactly the GPU device nodes of the GPUs the unit is pinned to
#   (./gpu-access.nix). A module passes only what differs, each deviation with its reason;
# - `checkedFile`: a generated config checked at build time by the service's own validator.
{ lib }:

let
  addresses = import ./addresses.nix { inherit lib; };
  gpuAccess = import ./gpu-access.nix { inherit lib; };

  # The restart policy of every hydra unit: bounded exponential backoff, and no restart of a
  # configuration the service refused.
  restartPolicy = {
    Restart = "on-failure";
    RestartSec = "2s";
    # 2 s, doubling over 8 steps up to 5 min.
    RestartSteps = 8;
    RestartMaxDelaySec = "5min";
    # 78 (EX_CONFIG): the configuration cannot work; a restart will not change that.
    RestartPreventExitStatus = [ 78 ];
  };
in
{
  inherit (addresses) isLoopback localHost;
  inherit restartPolicy;

  # What a client on this host connects to for a listener: host:port, IPv6 bracketed.
  localEndpoint =
    listener:
    let
      host = addresses.localHost listener.listenAddress;
    in
    "${if lib.hasInfix ":" host then "[${host}]" else host}:${toString listener.port}";

  # `what`: who listens, for the descriptions ("the exporter"); `port`: its default port.
  listenerOptions =
    {
      what,
      port,
      portDefaultText ? null,
    }:
    {
      listenAddress = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = ''
          Address ${what} listens on. The default is reachable from this host only; `0.0.0.0`
          (or `::`) to be reached from the network, together with `openFirewall`.
        '';
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = port;
        description = "TCP port ${what} listens on.";
      }
      // lib.optionalAttrs (portDefaultText != null) { defaultText = portDefaultText; };
      openFirewall = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Open the port of ${what} in the firewall, on `firewallInterfaces` if set.";
      };
      firewallInterfaces = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "enp5s0" ];
        description = ''
          With `openFirewall`, open the port only on these interfaces (for example the LAN the
          clients are on). Empty: on every interface.
        '';
      };
    };

  # `configFile`: a service's own config file instead of the generated one. `settings`: the
  # option path of what it replaces, for the description.
  configFileOption =
    settings:
    lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        Your own configuration file instead of the one generated from {option}`${settings}` (and
        the options that feed it), which is then ignored. Checked at build time by the service
        when it is in the Nix store.
      '';
    };

  # A file the build can read (a path in the store, not one on the host).
  inStore = file: builtins.isPath file || lib.hasPrefix builtins.storeDir (toString file);

  # The assertions and firewall rules of listeners: an attrset option path -> listener (the
  # option path names the listener in messages, e.g. "services.hydra-health"). Only fixed
  # attributes, so a module may pass listeners computed from its own options.
  listenersConfig =
    listeners:
    let
      opened = lib.filterAttrs (_: l: l.openFirewall) listeners;
      everywhere = lib.filterAttrs (_: l: l.firewallInterfaces == [ ]) opened;
      onInterfaces = lib.filterAttrs (_: l: l.firewallInterfaces != [ ]) opened;
      interfaces = lib.unique (
        lib.concatMap (l: l.firewallInterfaces) (lib.attrValues onInterfaces)
      );
    in
    {
      assertions = lib.mapAttrsToList (path: listener: {
        assertion = !(listener.openFirewall && addresses.isLoopback listener.listenAddress);
        message = ''
          ${path}.openFirewall opens port ${toString listener.port}, but ${path}.listenAddress is
          ${listener.listenAddress} (this host only); set ${path}.listenAddress = "0.0.0.0" or
          leave the port closed.
        '';
      }) listeners;
      networking.firewall = {
        allowedTCPPorts = lib.mapAttrsToList (_: l: l.port) everywhere;
        interfaces = lib.genAttrs interfaces (interface: {
          allowedTCPPorts = lib.mapAttrsToList (_: l: l.port) (
            lib.filterAttrs (_: l: lib.elem interface l.firewallInterfaces) onInterfaces
          );
        });
      };
    };

  # A systemd service. gpus: the inventory entries (hydra.gpus) the unit is pinned to;
  # compute: it runs GPU kernels (engines) rather than only querying the driver (exporter).
  # serviceConfig holds what the module sets and its deviations from the shared sandbox (a host
  # changes a value with lib.mkForce in systemd.services.<name>.serviceConfig).
  mkUnit =
    {
      gpus ? [ ],
      compute ? false,
      after ? [ ],
      wants ? [ ],
      environment ? { },
      serviceConfig,
      startLimitIntervalSec ? 600,
      ...
    }@args:
    let
      access = gpuAccess { inherit gpus compute; };
      devices = lib.optionalAttrs (access.deviceAllow != [ ]) {
        # The GPU nodes are reached through DeviceAllow; a private /dev would have none.
        PrivateDevices = false;
        DeviceAllow = access.deviceAllow;
        SupplementaryGroups = access.supplementaryGroups;
      };
    in
    builtins.removeAttrs args [
      "gpus"
      "compute"
    ]
    // {
      after = access.units ++ after;
      wants = access.units ++ wants;
      environment = access.environment // environment;
      # Five failed starts within the interval and systemd gives up until an operator (or the
      # health agent's budgeted remediation) starts it again.
      startLimitBurst = 5;
      inherit startLimitIntervalSec;
      serviceConfig =
        import ./hardening.nix { inherit lib; } // restartPolicy // devices // serviceConfig;
    };

  # The config file `file`, checked at build time by `command` (the service's own validator,
  # run with `package` on PATH as `command ... FILE`): a configuration the service would refuse
  # fails the build of the system instead of the start of the unit. Its output is the checker's
  # report. (Real NixOS also has `system.checks`; a file in /etc works on every evaluator and
  # gives the operator the report.)
  checkedFile =
    pkgs:
    {
      name,
      package,
      command,
    }:
    let
      script = pkgs.writeShellScript "${name}.sh" ''
        ${command}
      '';
    in
    pkgs.runCommand name { nativeBuildInputs = [ package ]; } ''
      if ! ${script} > "$out" 2>&1; then
        cat "$out" >&2
        exit 1
      fi
    '';
}
