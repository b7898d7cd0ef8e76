# l: the ROCm workstation (Threadripper PRO 3945WX, MI50 + W7500) and the fleet's monitoring.
# Every engine is pinned to one card; clients reach them through the LiteLLM gateway on 4000,
# so the engines listen on loopback only.
{ pkgs, ... }:

let
  # ROCm builds for every target nixpkgs lists (gfx906 and gfx1102 among them). Overriding the
  # package's rocmGpuTargets from config.hydra.rocm.gpuTargets gives a smaller, local build.
  llamaCppRocm = pkgs.llama-cpp.override { rocmSupport = true; };
in
{
  imports = [
    ./hardware.nix
    ../common.nix
    ../../roles/monitoring.nix
  ];

  networking.hostName = "l";
  system.stateVersion = "26.05";

  hydra.gpus = [
    {
      vendor = "amd";
      model = "Instinct MI50";
      vramGiB = 32;
      arch = "gfx906";
      index = 0;
    }
    {
      vendor = "amd";
      model = "Radeon Pro W7500";
      vramGiB = 8;
      arch = "gfx1102";
      index = 1;
    }
  ];

  services.hydra-gpu-exporter.backends = [ "amdgpu" ];

  services.hydra-inference = {
    enable = true;
    instances.ollama = {
      engine = "ollama";
      package = pkgs.ollama-rocm;
      gpus = [ 0 ];
      port = 11434;
      # Shares the MI50 with llama-mi50: together about 20 GiB of its 32.
      model = "llama3.1:8b";
      contextLength = 8192;
      modelInfo = (import ../models.nix)."llama-3.1-8b-q4_k_m";
    };
    instances.llama-mi50 = {
      engine = "llama-cpp";
      package = llamaCppRocm;
      gpus = [ 0 ];
      port = 8090;
      model = "/var/lib/hydra/models/Qwen2.5-14B-Instruct-Q4_K_M.gguf";
      contextLength = 32768;
      modelInfo = (import ../models.nix)."qwen2.5-14b-q4_k_m";
    };
    instances.llama-w7500 = {
      engine = "llama-cpp";
      package = llamaCppRocm;
      gpus = [ 1 ];
      port = 8091;
      model = "/var/lib/hydra/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf";
      contextLength = 8192;
      modelInfo = (import ../models.nix)."qwen2.5-7b-q4_k_m";
    };
    # LiteLLM: the one LAN entry point, OpenAI API, routes to every instance above.
    gateway = {
      enable = true;
      listenAddress = "0.0.0.0";
      port = 4000;
      masterKeyFile = "/run/secrets/litellm-master-key";
      openFirewall = true;
    };
  };

  # The fleet's Prometheus, Alertmanager, Grafana and status page (roles/monitoring.nix).
  # Receivers: set hydra.roles.monitoring.receivers.{ntfy,webhook}.url (+ tokenFile) to be paged.
  hydra.roles.monitoring.enable = true;
}
