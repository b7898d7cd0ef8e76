# The host's GPU inventory. The exporter, the launcher and the driver profiles all read it,
# so a GPU is described once. Also the unit that waits for the inventory's device nodes, after
# which the GPU units start (why: modules/lib/gpu-access.nix).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  gpuType = lib.types.submodule {
    options = {
      vendor = lib.mkOption {
        type = lib.types.enum [
          "nvidia"
          "amd"
        ];
        description = "GPU vendor; selects the driver profile and the metrics backend.";
      };
      model = lib.mkOption {
        type = lib.types.str;
        example = "RTX 5090";
        description = "Marketing name, shown in plans, alerts and dashboards.";
      };
      vramGiB = lib.mkOption {
        type = lib.types.ints.positive;
        example = 32;
        description = "Memory of the card in GiB, used by the launcher's VRAM-fit preflight.";
      };
      arch = lib.mkOption {
        type = lib.types.str;
        example = "sm_120";
        description = ''
          Architecture: the CUDA compute capability for NVIDIA (`sm_120` is Blackwell, `sm_89`
          Ada) or the gfx target for AMD (`gfx906`, `gfx1102`). The launcher checks the driver
          against it.
        '';
      };
      index = lib.mkOption {
        type = lib.types.ints.unsigned;
        description = ''
          Index of the card in PCI bus order: the NVML index (and `/dev/nvidiaN`) for NVIDIA,
          the ROCm device index for AMD. Instances refer to GPUs by this number.
        '';
      };
      pciBusId = lib.mkOption {
        type = lib.types.nullOr (
          lib.types.strMatching "[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\\.[0-7]"
        );
        default = null;
        example = "0000:43:00.0";
        description = ''
          PCI address of the card (`lspci -D`). For AMD it names the card's render node by its
          stable `/dev/dri/by-path` link, so an engine may open that node only; without it the
          engine may open every DRM node.
        '';
      };
      uuid = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "GPU-5f0e2b7c-0000-0000-0000-000000000000";
        description = ''
          Stable identifier (`nvidia-smi -L`). When set, NVIDIA engines are pinned with
          `CUDA_VISIBLE_DEVICES=<uuid>`, which survives a reordering of the bus.
        '';
      };
    };
  };

  cfg = config.hydra.gpuDevices;
  nvidia = builtins.filter (gpu: gpu.vendor == "nvidia") config.hydra.gpus;
  amd = builtins.filter (gpu: gpu.vendor == "amd") config.hydra.gpus;
  # Every node a hydra unit may be given (modules/lib/gpu-access.nix), for the whole inventory.
  nodes =
    lib.optionals (nvidia != [ ]) (
      [
        "/dev/nvidiactl"
        "/dev/nvidia-uvm"
      ]
      ++ map (gpu: "/dev/nvidia${toString gpu.index}") nvidia
    )
    ++ lib.optionals (amd != [ ]) (
      [ "/dev/kfd" ]
      ++ map (gpu: "/dev/dri/by-path/pci-${gpu.pciBusId}-render") (
        builtins.filter (gpu: gpu.pciBusId != null) amd
      )
    );
  waitScript = pkgs.writeShellScript "hydra-gpu-devices" ''
    deadline=$((SECONDS + ${toString cfg.timeout}))
    for node in ${lib.escapeShellArgs nodes}; do
      until [ -e "$node" ]; do
        if ((SECONDS >= deadline)); then
          echo "$node did not appear within ${toString cfg.timeout} s; is the driver loaded?" >&2
          exit 1
        fi
        sleep 1
      done
    done
  '';
in
{
  options.hydra.gpuDevices.timeout = lib.mkOption {
    type = lib.types.ints.positive;
    default = 120;
    description = ''
      Seconds `hydra-gpu-devices.service` waits for the device nodes of the cards in
      {option}`hydra.gpus` before it fails. The GPU units start after it either way; a card
      whose node is missing then is reported missing by the exporter and the launcher.
    '';
  };

  options.hydra.gpus = lib.mkOption {
    type = lib.types.listOf gpuType;
    default = [ ];
    example = lib.literalExpression ''
      [
        { vendor = "nvidia"; model = "RTX 5090"; vramGiB = 32; arch = "sm_120"; index = 0; }
        { vendor = "nvidia"; model = "RTX 4090"; vramGiB = 24; arch = "sm_89"; index = 1; }
      ]
    '';
    description = "GPUs installed in this host, one entry per card.";
  };

  config = lib.mkIf (nodes != [ ]) {
    systemd.services.hydra-gpu-devices = {
      description = "Wait for the device nodes of the GPUs in hydra.gpus";
      after = [
        "systemd-modules-load.service"
        "systemd-udevd.service"
      ];
      serviceConfig = import ./lib/hardening.nix { inherit lib; } // {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = waitScript;
        DynamicUser = true;
        # It only looks at /dev: the real one, not a private copy.
        PrivateDevices = false;
        DevicePolicy = "closed";
        RestrictAddressFamilies = "none";
        PrivateNetwork = true;
        IPAddressDeny = "any";
      };
    };
  };
}
