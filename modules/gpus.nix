# The host's GPU inventory. The exporter, the launcher and the driver profiles all read it,
# so a GPU is described once.
{ lib, ... }:

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
in
{
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
}
