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

      # The fleet (fleet.nix): each NixOS host is hosts/<name>/default.nix on top of every hydra
      # module.
      fleet = import ./fleet.nix;
      hosts = lib.attrNames (lib.filterAttrs (_: host: host.nixos) fleet.hosts);
      # file_sd targets of every host's exporter and health agent (see hosts/scrape-targets.nix),
      # from the static table, not from the evaluated hosts.
      scrapeTargets = import ./hosts/scrape-targets.nix { inherit lib; } fleet;
    in
    {
      overlays.default = import ./overlays;

      nixosModules = {
        default = ./modules;
        gpu-exporter = ./modules/gpu-exporter;
        inference = ./modules/inference;
        health-agent = ./modules/health-agent;
      };

      nixosConfigurations = lib.genAttrs hosts (
        host:
        lib.nixosSystem {
          # Static data only (the monitoring role scrapes these targets): nothing here is read
          # back from the evaluated hosts.
          specialArgs.hydraFleet = { inherit scrapeTargets; };
          modules = [
            self.nixosModules.default
            { nixpkgs.overlays = [ self.overlays.default ]; }
            (./hosts + "/${host}")
          ];
        }
      );

      packages = forAllSystems (pkgs: {
        inherit (pkgs) hydra-fleet pyrsmi;
        default = pkgs.hydra-fleet;
        # For the Prometheus on hydra-storage (not NixOS): `nix build .#scrape-targets`, then
        # copy result to its file_sd_configs directory.
        scrape-targets = (pkgs.formats.json { }).generate "hydra-scrape-targets.json" scrapeTargets;
      });

      checks = forAllSystems (
        pkgs:
        import ./tests { inherit pkgs self; }
        // {
          # The Python package build runs its pytest suite in the check phase.
          inherit (pkgs) hydra-fleet;
        }
        # Each host's generated configs, checked by the services themselves (the same
        # derivations the host's system links under /etc), without building the whole system.
        // lib.mapAttrs' (
          host: system:
          lib.nameValuePair "configs-${host}" system.config.system.build.hydraConfigChecks
        ) self.nixosConfigurations
        // {
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
