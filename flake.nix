{
  description = "hydra: a declarative, self-checking LLM inference cluster on NixOS GPU hosts";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));
      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };
    in
    {
      overlays.default = import ./overlays;

      nixosModules = {
        default = ./modules;
        health-agent = ./modules/health-agent.nix;
      };

      packages = forAllSystems (pkgs: {
        inherit (pkgs) hydra-fleet pyrsmi;
        default = pkgs.hydra-fleet;
      });

      checks = forAllSystems (
        pkgs:
        import ./tests { inherit pkgs self; }
        // {
          # The Python package build runs its pytest suite in the check phase.
          inherit (pkgs) hydra-fleet;
          formatting = pkgs.runCommand "hydra-formatting" { nativeBuildInputs = [ pkgs.nixfmt-tree ]; } ''
            cd ${self}
            treefmt --ci --no-cache --tree-root . --walk filesystem
            touch $out
          '';
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nixfmt-tree
            pkgs.python3
            pkgs.gnumake
          ];
        };
      });
    };
}
