# Conveniences the Nix side keeps for the engines it knows: the binary hydra-launch runs from
# the instance's package, the port it listens on by default, its readiness path (for the health
# agent's check), nixpkgs' package where there is one, and the model name the gateway sends it
# (`model name inst`). Everything about an engine (argv or config file, pinning variables,
# probes, cache types, KV formula, which engines exist) is the launcher's, which checks every
# instance at build time: an engine added there works here with no entry (`factsOf` falls back
# to `generic`; the instance then sets its port and package).
{ lib, pkgs }:

let
  generic = {
    binary = pkg: lib.getExe pkg;
    port = null;
    probePath = null;
    package = null;
    model = name: _: name;
  };
  known = {
    tabbyapi = {
      binary = pkg: lib.getExe pkg;
      port = 5000;
      probePath = "/health";
      package = null;
      model = name: _: name;
    };
    ollama = {
      binary = pkg: lib.getExe' pkg "ollama";
      port = 11434;
      probePath = "/";
      package = pkgs.ollama;
      # Ollama serves every pulled model by its own name.
      model = _: inst: inst.model;
    };
    llama-cpp = {
      binary = pkg: lib.getExe' pkg "llama-server";
      port = 8080;
      probePath = "/health";
      package = pkgs.llama-cpp;
      model = name: _: name;
    };
    vllm = {
      binary = pkg: lib.getExe' pkg "vllm";
      port = 8000;
      probePath = "/health";
      package = null;
      model = name: _: name;
    };
    # An argv of the instance's own (ComfyUI, ...): no binary, port or probe of its own.
    command = {
      binary = _: null;
      port = null;
      probePath = null;
      package = null;
      model = name: _: name;
    };
  };
in
{
  inherit known;
  factsOf = engine: known.${engine} or generic;
}
