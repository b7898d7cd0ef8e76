# The build-time checks of the hydra services' generated configs (modules/lib/service.nix
# `checkedFile`), collected so `nix flake check` can build them for a host without building the
# host (`checks.x86_64-linux.configs-<host>`). Each service module also links its own under
# /etc, which makes them part of the system: a refused config fails the system's build. (Real
# NixOS has `system.checks` for this; /etc works on every evaluator and gives the operator the
# report.)
{
  config,
  lib,
  pkgs,
  ...
}:

{
  options.hydra.configChecks = lib.mkOption {
    type = lib.types.attrsOf lib.types.package;
    default = { };
    internal = true;
    description = "Build-time checks of generated service configs, by service.";
  };

  config.system.build.hydraConfigChecks = pkgs.linkFarm "hydra-config-checks" (
    lib.mapAttrsToList (name: path: { inherit name path; }) config.hydra.configChecks
  );
}
