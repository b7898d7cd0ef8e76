# Scoped unfree: every module lists the unfree package names it needs in
# hydra.unfree.allowedPackages, and this module turns the merged list into the one
# nixpkgs.config.allowUnfreePredicate. (nixpkgs.config keeps only one definition of a
# function-valued key, so a predicate written in two modules silently drops one of them.)
{
  config,
  lib,
  ...
}:

let
  cfg = config.hydra.unfree;
in
{
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
    (lib.mkIf (cfg.allowedPackages != [ ]) {
      nixpkgs.config.allowUnfreePredicate =
        pkg: builtins.elem (lib.getName pkg) cfg.allowedPackages;
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
