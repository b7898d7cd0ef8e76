# hydra-ai: RTX 5090 + RTX 4090. TabbyAPI (ExLlamaV2) serves one 70B model at 3.5 bpw split
# across both cards; only ExLlama splits a model across unequal cards.
{ pkgs, ... }:

{
  imports = [
    ./hardware.nix
    ../common.nix
  ];

  networking.hostName = "hydra-ai";
  system.stateVersion = "26.05";

  hydra.gpus = [
    {
      vendor = "nvidia";
      model = "RTX 5090";
      vramGiB = 32;
      arch = "sm_120";
      index = 0;
    }
    {
      vendor = "nvidia";
      model = "RTX 4090";
      vramGiB = 24;
      arch = "sm_89";
      index = 1;
    }
  ];

  services.hydra-gpu-exporter.backends = [ "nvml" ];

  services.hydra-inference = {
    enable = true;
    instances.tabbyapi = {
      engine = "tabbyapi";
      # nixpkgs has no TabbyAPI: it runs from its own checkout and virtualenv (ExLlamaV2 ships
      # CUDA wheels matched to its PyTorch), installed by the operator in /var/lib/tabbyapi.
      package = pkgs.writeShellApplication {
        name = "tabbyapi";
        text = ''
          cd /var/lib/tabbyapi
          exec /var/lib/tabbyapi/venv/bin/python main.py "$@"
        '';
      };
      gpus = [
        0
        1
      ];
      # LAN clients use TabbyAPI's OpenAI-compatible API directly (no gateway on this host).
      listenAddress = "0.0.0.0";
      port = 5000;
      openFirewall = true;
      model = "/var/lib/hydra/models/Llama-3.3-70B-Instruct-exl2-3.5bpw";
      # 8K is safe, 16K is tight, 32K runs out of memory: the launcher's preflight refuses it.
      contextLength = 16384;
      # Tensor parallel across the unequal cards (only ExLlama does this): every layer is split
      # evenly, so the 24 GB card bounds the context.
      settings.model.tensor_parallel = true;
      apiKeyFile = "/run/secrets/tabbyapi-api-key";
      # Facts about the model, so the launcher's VRAM plan needs no model files to compute.
      modelInfo = {
        parameters = 70.6e9;
        layers = 80;
        kvHeads = 8;
        headDim = 128;
        bitsPerWeight = 3.5;
      };
    };
  };
}
