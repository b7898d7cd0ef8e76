# What a unit under DevicePolicy=closed needs to reach the GPUs it is pinned to (entries of
# hydra.gpus), and nothing more.
#
# systemd resolves a DeviceAllow= path when the unit starts and silently drops one that does not
# exist yet; the NVIDIA nodes are made by udev rules when the driver's modules load, and the
# by-path links of AMD render nodes when udev has processed the card, both possibly after
# multi-user.target's first units start. Exact paths are therefore safe only after the nodes
# exist: every unit given paths here is ordered after hydra-gpu-devices.service (modules/gpus.nix),
# which waits for them. Where no exact path is known (an AMD card without pciBusId: its render
# node number follows probe order, not the ROCm index), the DRM device class is allowed instead;
# a class is resolved from /proc/devices and needs no node.
{ lib }:

{
  # gpus: the inventory entries of the unit's GPUs. compute: the unit runs CUDA/HIP kernels (an
  # engine), not only management queries (the exporter reads NVML, which needs nvidiactl and
  # the card's node, and AMD sysfs, which needs no device node at all).
  gpus,
  compute,
}:
let
  nvidia = builtins.filter (gpu: gpu.vendor == "nvidia") gpus;
  amd = builtins.filter (gpu: gpu.vendor == "amd") gpus;
  renderNode =
    gpu:
    if gpu.pciBusId == null then
      "char-drm rw"
    else
      "/dev/dri/by-path/pci-${gpu.pciBusId}-render rw";
  deviceAllow =
    lib.optionals (nvidia != [ ]) (
      [ "/dev/nvidiactl rw" ]
      # Unified memory, which CUDA needs for kernels; never nvidia-uvm-tools (the profiler).
      ++ lib.optional compute "/dev/nvidia-uvm rw"
      ++ map (gpu: "/dev/nvidia${toString gpu.index} rw") nvidia
    )
    ++ lib.optionals (compute && amd != [ ]) ([ "/dev/kfd rw" ] ++ lib.unique (map renderNode amd));
in
{
  inherit deviceAllow;

  # Ordering after the nodes exist (see above); wants, not requires: a unit whose card is
  # missing still starts and reports it (the exporter's up=0, the launcher's preflight).
  units = lib.optional (deviceAllow != [ ]) "hydra-gpu-devices.service";

  supplementaryGroups = lib.optionals (deviceAllow != [ ]) [
    "video"
    "render"
  ];

  # libnvidia-ml.so.1 and libcuda.so live here on NixOS.
  environment = lib.optionalAttrs (nvidia != [ ]) {
    LD_LIBRARY_PATH = "/run/opengl-driver/lib";
  };
}
