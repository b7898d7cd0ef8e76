# services.hydra-gpu-exporter: Prometheus metrics for every GPU in hydra.gpus, NVIDIA and AMD
# in one schema, with per-process VRAM attributed to systemd units.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.hydra-gpu-exporter;
  settingsFormat = pkgs.formats.json { };
  access = import ./lib/gpu-access.nix { inherit lib; } {
    gpus = config.hydra.gpus;
    compute = false;
  };

  countOf = vendor: lib.length (lib.filter (gpu: gpu.vendor == vendor) config.hydra.gpus);
  inventoryCounts = lib.filterAttrs (_: count: count > 0) {
    nvidia = countOf "nvidia";
    amd = countOf "amd";
  };

  hasAmd = countOf "amd" > 0;
  usesNvml = lib.elem "auto" cfg.backends || lib.elem "nvml" cfg.backends;
  usesPyrsmi = lib.elem "pyrsmi" cfg.backends;
  # Reading another user's /proc/<pid>/fdinfo (AMD per-process VRAM) is a ptrace-mode read.
  needsPtrace = hasAmd && cfg.settings.processMetrics;

  configFile = settingsFormat.generate "hydra-gpu-exporter.json" (
    cfg.settings
    // {
      inherit (cfg) listenAddress port backends;
    }
  );
  inherit (import ./lib/addresses.nix { inherit lib; }) isLoopback;
in
{
  imports = [ ./gpus.nix ];

  options.services.hydra-gpu-exporter = {
    enable = lib.mkEnableOption "the hydra GPU exporter (Prometheus metrics for GPUs)";

    package = lib.mkPackageOption pkgs "hydra-fleet" { };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address to listen on; `0.0.0.0` to be scraped from another host.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 9445;
      description = "TCP port of the exporter's HTTP server (`/metrics`, `/healthz`, `/`).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open {option}`port` in the firewall, on {option}`firewallInterfaces` if set.";
    };

    firewallInterfaces = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "enp5s0" ];
      description = ''
        With {option}`openFirewall`, open the port only on these interfaces (for example the LAN
        the Prometheus server is on). Empty: open it on every interface.
      '';
    };

    backends = lib.mkOption {
      type = lib.types.listOf (
        lib.types.enum [
          "auto"
          "nvml"
          "amdgpu"
          "pyrsmi"
          "synthetic"
        ]
      );
      default = [ "auto" ];
      example = [
        "amdgpu"
        "pyrsmi"
      ];
      description = ''
        Metric sources. `auto` uses every vendor found (NVML and amdgpu sysfs); `pyrsmi` adds
        ROCm's SMI library for what sysfs lacks (and selects the `hydra-fleet-rocm` package);
        `synthetic` serves the devices in {option}`settings.synthetic.devices` (VM tests, demos).
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        The exporter's JSON configuration (keys as in the `hydra-gpu-exporter` documentation).
        {option}`listenAddress`, {option}`port` and {option}`backends` are added to it.
      '';
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          expectedDevices = lib.mkOption {
            type = lib.types.attrsOf lib.types.ints.unsigned;
            default = inventoryCounts;
            defaultText = lib.literalExpression "GPUs per vendor in config.hydra.gpus";
            example = {
              nvidia = 2;
            };
            description = ''
              GPUs per vendor this host should have, exported as `hydra_gpu_expected_devices`,
              so an alert fires (and the health gate fails) when one falls off the bus.
            '';
          };
          processMetrics = lib.mkOption {
            type = lib.types.bool;
            default = true;
            description = ''
              Export `hydra_gpu_process_memory_bytes` per process, with its systemd unit. On AMD
              this reads other users' `/proc/<pid>/fdinfo`, which needs `CAP_SYS_PTRACE`.
            '';
          };
          collectTimeout = lib.mkOption {
            type = lib.types.numbers.positive;
            default = 5;
            description = "Seconds a scrape waits for a backend before reporting it failed.";
          };
          synthetic.devices = lib.mkOption {
            type = lib.types.listOf settingsFormat.type;
            default = [ ];
            example = [
              {
                name = "demo";
                vendor = "nvidia";
                memoryBytes = 25769803776;
                lost = false;
              }
            ];
            description = "Devices of the `synthetic` backend (`name`, `vendor`, `memoryBytes`, `lost`).";
          };
        };
      };
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Extra command-line arguments for `hydra-gpu-exporter`.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(cfg.openFirewall && isLoopback cfg.listenAddress);
        message = ''
          services.hydra-gpu-exporter.openFirewall is set but the exporter listens on
          ${cfg.listenAddress} only; set services.hydra-gpu-exporter.listenAddress = "0.0.0.0".
        '';
      }
      {
        assertion = lib.elem "synthetic" cfg.backends -> cfg.settings.synthetic.devices != [ ];
        message = ''
          services.hydra-gpu-exporter.backends contains "synthetic" but
          services.hydra-gpu-exporter.settings.synthetic.devices is empty; describe at least one
          device, e.g. [ { name = "demo"; memoryBytes = 25769803776; } ].
        '';
      }
    ];

    # pyrsmi only ships in the ROCm variant of the package.
    services.hydra-gpu-exporter.package = lib.mkIf (hasAmd && usesPyrsmi) (
      lib.mkDefault pkgs.hydra-fleet-rocm
    );

    networking.firewall = lib.mkIf cfg.openFirewall (
      if cfg.firewallInterfaces == [ ] then
        { allowedTCPPorts = [ cfg.port ]; }
      else
        {
          interfaces = lib.genAttrs cfg.firewallInterfaces (_: {
            allowedTCPPorts = [ cfg.port ];
          });
        }
    );

    systemd.services.hydra-gpu-exporter = {
      description = "hydra GPU exporter";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ] ++ access.units;
      wants = access.units;
      startLimitBurst = 5;
      startLimitIntervalSec = 300;
      environment =
        access.environment
        # NVML (libnvidia-ml.so.1) is found here on NixOS, also when `auto` probes for it.
        // lib.optionalAttrs usesNvml { LD_LIBRARY_PATH = "/run/opengl-driver/lib"; }
        // lib.optionalAttrs usesPyrsmi { ROCM_PATH = "${pkgs.rocmPackages.amdsmi}"; };
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe' cfg.package "hydra-gpu-exporter")
            "--config"
            "${configFile}"
          ]
          ++ cfg.extraArgs
        );
        Restart = "on-failure";
        RestartSec = "1s";
        RestartSteps = 5;
        RestartMaxDelaySec = "60s";
        TimeoutStartSec = "60s";
        # A driver call wedged in a worker thread would otherwise hold up the stop for 90 s.
        TimeoutStopSec = "15s";

        DynamicUser = true;
        SupplementaryGroups = access.supplementaryGroups;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        # GPU nodes are reached through DeviceAllow, so /dev cannot be private.
        PrivateDevices = false;
        DevicePolicy = "closed";
        DeviceAllow = access.deviceAllow;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        # Process attribution reads other processes' comm, cgroup and fdinfo: /proc stays visible.
        ProtectProc = "default";
        ProcSubset = "all";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        UMask = "0077";
        CapabilityBoundingSet = if needsPtrace then [ "CAP_SYS_PTRACE" ] else [ "" ];
        AmbientCapabilities = lib.optionals needsPtrace [ "CAP_SYS_PTRACE" ];
      };
    };
  };
}
