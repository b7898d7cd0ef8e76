# Every other .nix file here is one NixOS VM test, called with { pkgs, self }.
{ pkgs, self }:

let
  files = builtins.readDir ./.;
  isTest = name: type: type == "regular" && name != "default.nix" && pkgs.lib.hasSuffix ".nix" name;
  tests = pkgs.lib.filterAttrs isTest files;
in
pkgs.lib.mapAttrs' (
  name: _: pkgs.lib.nameValuePair (pkgs.lib.removeSuffix ".nix" name) (import ./${name} { inherit pkgs self; })
) tests
