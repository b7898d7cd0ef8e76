# Adds this flake's packages to nixpkgs.
final: prev:

let
  inherit (final.lib) hasPrefix;

  # lib.fileset needs builtins.readFileType (Nix 2.14); every Nix that evaluates nixpkgs 26.05
  # has it. On an older evaluator (Debian's Nix 2.8, which runs the flake's stand-in
  # evaluation) the package's `lib.fileset.toSource { root; fileset = unions [ paths ]; }`
  # selects the same files through lib.cleanSourceWith.
  lib =
    if builtins ? readFileType then
      final.lib
    else
      final.lib
      // {
        fileset = final.lib.fileset // {
          unions = map toString;
          toSource =
            { root, fileset }:
            final.lib.cleanSourceWith {
              src = root;
              # the listed paths, what is inside them, and the folders that lead to them
              filter =
                path: _type:
                builtins.any (
                  part: path == part || hasPrefix "${part}/" path || hasPrefix "${path}/" part
                ) fileset;
            };
        };
      };
in
{
  pyrsmi = final.python3Packages.callPackage ../pkgs/pyrsmi/package.nix { };
  hydra-fleet = final.callPackage ../pkgs/hydra-fleet/package.nix { inherit lib; };
  hydra-fleet-rocm = final.hydra-fleet.override { withRocm = true; };
}
