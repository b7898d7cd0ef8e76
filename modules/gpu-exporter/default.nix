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
  service = import ../lib/service.nix { inherit lib; };
  settingsFormat = pkgs.formats.json { };

  countOf = vendor: lib.length (lib.filter (gpu: gpu.vendor == vendor) config.hydra.gpus);
  inventoryCounts = lib.filterAttrs (_: count: count > 0) {
    nvidia = countOf "nvidia";
    amd = countOf "amd";
  };

  usesNvml = lib.elem "auto" cfg.backends || lib.elem "nvml" cfg.backends;
  usesPyrsmi = lib.elem "pyrsmi" cfg.backends;

  generatedConfig = settingsFormat.generate "hydra-gpu-exporter.json" (
    cfg.settings
    // {
      inherit (cfg) listenAddress port backends;
    }
  );
  configFile = if cfg.configFile != null then cfg.configFile else generatedConfig;

  # `hydra-gpu-exporter --check` validates without touching hardware.
  checked = service.checkedFile pkgs {
    name = "hydra-gpu-exporter-check";
    inherit (cfg) package;
    command = "hydra-gpu-exporter --config ${lib.escapeShellArg configFile} --check";
  };

  checkable = service.inStore configFile;

  endpoint = "http://${service.localEndpoint cfg}";
  health = config.services.hydra-health;
in
{
  imports = [
    ../config-checks.nix
    ../gpus.nix
    # For services.hydra-health.checks, which this module fills when the agent is enabled.
    ../health-agent
  ];

  options.services.hydra-gpu-exporter =
    service.listenerOptions {
      what = "the exporter's HTTP server (`/metrics`, `/healthz`, `/`)";
      port = 9445;
    }
    // {
      enable = lib.mkEnableOption "the hydra GPU exporter (Prometheus metrics for GPUs)";

      package = lib.mkPackageOption pkgs "hydra-fleet" { };

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
          `synthetic` serves the devices in
          {option}`services.hydra-gpu-exporter.settings.synthetic.devices` (VM tests, demos).
        '';
      };

      settings = lib.mkOption {
        default = { };
        description = ''
          The exporter's JSON configuration file (keys as in the `hydra-gpu-exporter`
          documentation), RFC 42 style: any key may be set. {option}`services.hydra-gpu-exporter.listenAddress`,
          {option}`services.hydra-gpu-exporter.port` and {option}`services.hydra-gpu-exporter.backends`
          are added to it. The exporter validates it at build time.
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
                Export `hydra_gpu_process_memory_bytes` per process, with its systemd unit (from
                NVML on NVIDIA, from the world-readable KFD sysfs on AMD).
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

      configFile = service.configFileOption "services.hydra-gpu-exporter.settings";

      extraArgs = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Extra command-line arguments for `hydra-gpu-exporter`.";
      };
    };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      (service.listenersConfig { "services.hydra-gpu-exporter" = cfg; })
      {
        # pyrsmi only ships in the ROCm variant of the package.
        services.hydra-gpu-exporter.package = lib.mkIf (countOf "amd" > 0 && usesPyrsmi) (
          lib.mkDefault pkgs.hydra-fleet-rocm
        );

        hydra.configChecks.hydra-gpu-exporter = lib.mkIf checkable checked;
        environment.etc."hydra-gpu-exporter/check.txt" = lib.mkIf checkable { source = checked; };

        # Checks for the health agent, when it runs; a check of the same name in the host's
        # services.hydra-health.checks replaces one of these.
        services.hydra-health.checks = lib.mkIf (health.enable && health.autoChecks) {
          gpu-exporter = lib.mkDefault {
            type = "http";
            url = "${endpoint}/healthz";
            unit = "hydra-gpu-exporter.service";
            remediate = { };
          };
          gpus = lib.mkDefault {
            type = "gpu";
            url = "${endpoint}/metrics";
            interval = 30;
            timeout = 10;
            dependsOn = [ "gpu-exporter" ];
          };
        };

        systemd.services.hydra-gpu-exporter = service.mkUnit {
          description = "hydra GPU exporter";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          # NVML queries need nvidiactl and each card's node; AMD metrics come from sysfs, which
          # needs no device node.
          gpus = config.hydra.gpus;
          environment =
            # NVML (libnvidia-ml.so.1) is found here on NixOS, also when `auto` probes for it.
            lib.optionalAttrs usesNvml { LD_LIBRARY_PATH = "/run/opengl-driver/lib"; }
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
            DynamicUser = true;
            TimeoutStartSec = "60s";
            # A driver call wedged in a worker thread would otherwise hold up the stop for 90 s.
            TimeoutStopSec = "15s";
            # Deviation: process attribution reads other processes' comm and cgroup in /proc.
            ProtectProc = "default";
            ProcSubset = "all";
          };
        };
      }
    ]
  );

  meta.maintainers = [ ];
}
