# What a unit under DevicePolicy=closed needs to reach the given GPUs (entries of hydra.gpus).
{ lib }:

gpus:
let
  nvidia = builtins.filter (gpu: gpu.vendor == "nvidia") gpus;
  amd = builtins.filter (gpu: gpu.vendor == "amd") gpus;
in
{
  deviceAllow =
    lib.optionals (nvidia != [ ]) (
      [
        "/dev/nvidiactl rw"
        "/dev/nvidia-uvm rw"
        "/dev/nvidia-uvm-tools rw"
      ]
      ++ map (gpu: "/dev/nvidia${toString gpu.index} rw") nvidia
    )
    # Render nodes are numbered by probe order, not by ROCm index: allow the DRM class.
    ++ lib.optionals (amd != [ ]) [
      "char-drm rw"
      "/dev/kfd rw"
    ];

  supplementaryGroups = [
    "video"
    "render"
  ];

  # libnvidia-ml.so.1 and libcuda.so live here on NixOS.
  environment = lib.optionalAttrs (nvidia != [ ]) {
    LD_LIBRARY_PATH = "/run/opengl-driver/lib";
  };
}
