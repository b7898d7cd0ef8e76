# Scoped unfree: every module lists the unfree package names it needs in
# hydra.unfree.allowedPackages (and, for a family of packages whose names change between
# releases, the license they all carry in hydra.unfree.allowedLicenses), and this module turns
# the merged lists into the one nixpkgs.config.allowUnfreePredicate. (nixpkgs.config keeps only
# one definition of a function-valued key, so a predicate written in two modules silently drops
# one of them.)
{
  config,
  lib,
  ...
}:

let
  cfg = config.hydra.unfree;
in
{
  options.hydra.unfree.allowedLicenses = lib.mkOption {
    type = lib.types.listOf lib.types.str;
    default = [ ];
    example = [ "CUDA EULA" ];
    description = ''
      `shortName`s of unfree licenses whose packages this host may use, for package families
      whose names differ between releases (the CUDA redistributables: `cuda_cccl` or `cccl`,
      `cuda_crt`, `libnvvm`, ... depending on the CUDA version nixpkgs pins). A package is
      allowed when one of its licenses is listed. Merged across modules like
      {option}`hydra.unfree.allowedPackages`.
    '';
  };

  options.hydra.unfree.allowedPackages = lib.mkOption {
    type = lib.types.listOf lib.types.str;
    default = [ ];
    example = [
      "nvidia-x11"
      "cuda_cudart"
    ];
    description = ''
      Names (as `lib.getName` returns them) of the unfree packages this host may use. Lists
      from every module are merged; the result becomes `nixpkgs.config.allowUnfreePredicate`.
      Do not set `nixpkgs.config.allowUnfree` or your own predicate: add names here.
    '';
  };

  config = lib.mkMerge [
    (lib.mkIf (cfg.allowedPackages != [ ] || cfg.allowedLicenses != [ ]) {
      nixpkgs.config.allowUnfreePredicate =
        pkg:
        builtins.elem (lib.getName pkg) cfg.allowedPackages
        || lib.any (license: builtins.elem (license.shortName or null) cfg.allowedLicenses) (
          lib.toList (pkg.meta.license or [ ])
        );
    })
    {
      assertions = [
        {
          assertion = !(config.nixpkgs.config.allowUnfree or false);
          message = ''
            nixpkgs.config.allowUnfree = true allows every unfree package. Remove it and add the
            package names this host needs to hydra.unfree.allowedPackages.
          '';
        }
      ];
    }
  ];
}
