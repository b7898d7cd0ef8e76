# Adds this flake's packages to nixpkgs.
final: prev: {
  pyrsmi = final.python3Packages.callPackage ../pkgs/pyrsmi/package.nix { };
  hydra-fleet = final.callPackage ../pkgs/hydra-fleet/package.nix { };
  hydra-fleet-rocm = final.hydra-fleet.override { withRocm = true; };
}
