# AMD ROCm profile, enabled when hydra.gpus lists an AMD card: amdgpu in the initrd, the ROCm
# OpenCL/HIP runtime under /run/opengl-driver, the render/video groups, and the gfx targets of
# the installed cards for packages built with ROCm.
#
# No HSA_OVERRIDE_GFX_VERSION here: it would apply to every card, and with cards of two
# generations (gfx906 + gfx1102) it is wrong for at least one. Each engine is pinned to one card
# with HIP_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES instead (the launcher does this from `gpus`).
{
  config,
  lib,
  ...
}:

let
  amdGpus = builtins.filter (gpu: gpu.vendor == "amd") config.hydra.gpus;
  badArch = builtins.filter (gpu: builtins.match "gfx[0-9a-f]+" gpu.arch == null) amdGpus;
  describeGpu = gpu: "${gpu.model} (index ${toString gpu.index})";
  describe = gpus: lib.concatMapStringsSep ", " describeGpu gpus;
  globalOverride =
    config.environment.variables ? HSA_OVERRIDE_GFX_VERSION
    || config.environment.sessionVariables ? HSA_OVERRIDE_GFX_VERSION;
in
{
  imports = [ ./gpus.nix ];

  options.hydra.rocm.enable = lib.mkOption {
    type = lib.types.bool;
    default = amdGpus != [ ];
    defaultText = lib.literalMD "`true` when `hydra.gpus` lists an AMD card";
    description = ''
      Whether to set up amdgpu and the ROCm runtime. Follows the inventory; set it to false
      where the cards are only described, not present (a VM test).
    '';
  };

  options.hydra.rocm.gpuTargets = lib.mkOption {
    type = lib.types.listOf lib.types.str;
    readOnly = true;
    default = lib.unique (map (gpu: gpu.arch) amdGpus);
    defaultText = lib.literalMD "the `arch` of every AMD card in `hydra.gpus`";
    example = [
      "gfx906"
      "gfx1102"
    ];
    description = ''
      The gfx targets of this host's AMD cards. To build a ROCm package for these cards only
      (smaller, but not in the binary cache, so built locally), pass it on, e.g.
      `pkgs.ollama-rocm.override { rocmGpuTargets = config.hydra.rocm.gpuTargets; }`.
    '';
  };

  config = lib.mkIf config.hydra.rocm.enable {
    boot.initrd.kernelModules = [ "amdgpu" ];
    hardware.graphics.enable = true;
    hardware.amdgpu.opencl.enable = true;
    # /dev/kfd and /dev/dri/renderD* belong to these groups; engines get them as
    # SupplementaryGroups, operators through extraGroups.
    users.groups.render = { };
    users.groups.video = { };

    assertions = [
      {
        assertion = badArch == [ ];
        message = "hydra.gpus: AMD arch must be the gfx target (e.g. \"gfx906\"), got it wrong for ${describe badArch}.";
      }
      {
        assertion = !globalOverride;
        message = "HSA_OVERRIDE_GFX_VERSION is set globally (environment.variables or environment.sessionVariables): it applies to every AMD card and breaks the one it does not match. Remove it; set it for one engine with services.hydra-inference.instances.<name>.hsaOverrideGfxVersion, and only if its card is not a native ROCm target.";
      }
    ];
  };
}
