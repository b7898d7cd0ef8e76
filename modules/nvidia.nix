# NVIDIA driver profile, enabled when hydra.gpus lists an NVIDIA card: the open kernel module
# (Blackwell requires it), headless driver setup, the persistence daemon, and exactly the
# unfree packages the driver and the hosts' CUDA engines need.
{
  config,
  lib,
  ...
}:

let
  nvidiaGpus = builtins.filter (gpu: gpu.vendor == "nvidia") config.hydra.gpus;
  nv = config.hardware.nvidia;

  # "sm_120" -> 120; null when the arch is not written as sm_<number>.
  smOf =
    gpu:
    let
      m = builtins.match "sm_([0-9]+)" gpu.arch;
    in
    if m == null then null else lib.toInt (builtins.head m);
  badArch = builtins.filter (gpu: smOf gpu == null) nvidiaGpus;
  # sm_100 and newer is Blackwell: open kernel module only, driver 570 or newer.
  blackwell = builtins.filter (gpu: smOf gpu != null && smOf gpu >= 100) nvidiaGpus;
  describeGpu = gpu: "${gpu.model} (index ${toString gpu.index})";
  describe = gpus: lib.concatMapStringsSep ", " describeGpu gpus;
in
{
  imports = [
    ./gpus.nix
    ./unfree.nix
  ];

  options.hydra.nvidia.enable = lib.mkOption {
    type = lib.types.bool;
    default = nvidiaGpus != [ ];
    defaultText = lib.literalMD "`true` when `hydra.gpus` lists an NVIDIA card";
    description = ''
      Whether to set up the NVIDIA driver and allow its unfree packages. Follows the inventory;
      set it to false where the cards are only described, not present (a VM test).
    '';
  };

  config = lib.mkIf config.hydra.nvidia.enable {
    # Headless: X is not enabled, but the driver is selected through videoDrivers.
    services.xserver.videoDrivers = [ "nvidia" ];
    hardware.graphics.enable = true;
    hardware.nvidia = {
      open = lib.mkDefault true;
      package = lib.mkDefault config.boot.kernelPackages.nvidiaPackages.stable;
      modesetting.enable = lib.mkDefault true;
      # No GUI on these hosts; nvidia-settings would pull GTK into the closure.
      nvidiaSettings = lib.mkDefault false;
      # Keeps the driver initialised between jobs: no cold start, no GPU briefly missing.
      nvidiaPersistenced = lib.mkDefault true;
    };

    # Unified memory at boot, with either kernel module: engines' units may open
    # /dev/nvidia-uvm only once it exists (hydra-gpu-devices.service waits for it).
    boot.kernelModules = [ "nvidia_uvm" ];

    hydra.unfree.allowedPackages = lib.concatLists [
      [ "nvidia-x11" ]
      # The proprietary kernel module (pre-Turing cards) is its own unfree package.
      (lib.optional (!nv.open) "nvidia-kernel-modules")
      (lib.optional nv.nvidiaSettings "nvidia-settings")
      (lib.optional nv.nvidiaPersistenced "nvidia-persistenced")
      # cuDNN has its own EULA, not the CUDA one; its name has stayed the same.
      [ "cudnn" ]
    ];
    # The CUDA closure of the engines (ollama-cuda, llama.cpp with CUDA) by its license: its
    # package names change between CUDA releases and layouts (cuda_cccl, then cccl from CUDA
    # 13.3; cuda_crt and libnvvm from CUDA 13; libnvptxcompiler in the newer cuda_nvcc layout),
    # and every one of them carries the CUDA EULA, which no package outside CUDA does.
    hydra.unfree.allowedLicenses = [ lib.licenses.nvidiaCudaRedist.shortName ];

    assertions = [
      {
        assertion = badArch == [ ];
        message = "hydra.gpus: NVIDIA arch must be the compute capability written as sm_<number> (e.g. \"sm_120\"), got it wrong for ${describe badArch}.";
      }
      {
        assertion = blackwell == [ ] || nv.open == true;
        message = "hydra.gpus lists Blackwell cards (${describe blackwell}), which only work with the open kernel module: set hardware.nvidia.open = true.";
      }
      {
        assertion = blackwell == [ ] || lib.versionAtLeast nv.package.version "570";
        message = "hydra.gpus lists Blackwell cards (${describe blackwell}), which need NVIDIA driver 570 or newer (CUDA 12.8); hardware.nvidia.package is ${nv.package.version}: pick a newer one from config.boot.kernelPackages.nvidiaPackages.";
      }
    ];
  };
}
