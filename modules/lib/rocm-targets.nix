# The gfx targets a ROCm build of a package carries kernels for, read from the package's own
# build attributes at evaluation time; null when the package does not say (a CPU or CUDA build,
# or a layout not known here). nixpkgs' ollama passes them as `-DAMDGPU_TARGETS='...'` in its
# preBuild, llama-cpp as CMAKE_HIP_ARCHITECTURES in cmakeFlags, both from their `rocmGpuTargets`
# argument (default: rocmPackages.clr.localGpuTargets or clr.gpuTargets); rocBLAS, which both
# link, exposes its own as `amdgpu_targets`.
{ lib }:

let
  split = targets: lib.filter (t: t != "") (lib.splitString ";" targets);
  fromPreBuild =
    pkg:
    let
      m = builtins.match ".*-DAMDGPU_TARGETS='([^']*)'.*" (pkg.preBuild or "");
    in
    if m == null then null else split (builtins.head m);
  targetFlag = builtins.match "-D(CMAKE_HIP_ARCHITECTURES|AMDGPU_TARGETS|GPU_TARGETS)(:STRING)?=(.*)";
  fromCmakeFlags =
    pkg:
    let
      flags = lib.filter builtins.isString (pkg.cmakeFlags or [ ]);
      matches = lib.filter (m: m != null) (map targetFlag flags);
    in
    if matches == [ ] then null else split (lib.elemAt (builtins.head matches) 2);
in
{
  # The package's targets, or null.
  package =
    pkg:
    if pkg == null then
      null
    else if pkg ? rocmGpuTargets then
      pkg.rocmGpuTargets
    else
      let
        pre = fromPreBuild pkg;
      in
      if pre != null then pre else fromCmakeFlags pkg;

  # rocBLAS's targets (from the pinned rocmPackages), or null.
  rocblas =
    rocmPackages:
    if rocmPackages.rocblas ? amdgpu_targets then
      split rocmPackages.rocblas.amdgpu_targets
    else
      null;
}
