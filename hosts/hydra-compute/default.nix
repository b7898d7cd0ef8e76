# hydra-compute: 2× RTX 5070 Ti. Ollama on both cards; ComfyUI for images. VRAM is
# first-come-first-served, so ComfyUI starts only after Ollama is ready.
{ pkgs, ... }:

{
  imports = [
    ../hardware-placeholder.nix
    ../common.nix
  ];

  networking.hostName = "hydra-compute";
  system.stateVersion = "26.05";

  hydra.gpus = [
    {
      vendor = "nvidia";
      model = "RTX 5070 Ti";
      vramGiB = 16;
      arch = "sm_120";
      index = 0;
    }
    {
      vendor = "nvidia";
      model = "RTX 5070 Ti";
      vramGiB = 16;
      arch = "sm_120";
      index = 1;
    }
  ];

  services.hydra-gpu-exporter.backends = [ "nvml" ];

  services.hydra-inference = {
    enable = true;
    # LAN clients talk to both directly (no gateway on this host).
    instances.ollama = {
      engine = "ollama";
      package = pkgs.ollama-cuda;
      gpus = [
        0
        1
      ];
      listenAddress = "0.0.0.0";
      port = 11434;
      openFirewall = true;
      # The model the launcher loads before it reports ready (so ComfyUI starts after it).
      # About 6 GiB per card with this context: the rest of card 1 is ComfyUI's.
      model = "qwen2.5:14b";
      contextLength = 16384;
      modelInfo = (import ../models.nix)."qwen2.5-14b-q4_k_m";
    };
    instances.comfyui = {
      engine = "command";
      # ComfyUI renders on one card; Ollama may also use it, which is why it loads first.
      gpus = [ 1 ];
      listenAddress = "0.0.0.0";
      port = 8188;
      openFirewall = true;
      startAfter = [ "ollama" ];
      # Installed by the operator in its own virtualenv (ComfyUI and its custom nodes pin their
      # own PyTorch); the launcher pins it to card 1 and waits until it answers.
      command = [
        "/var/lib/comfyui/venv/bin/python"
        "/var/lib/comfyui/ComfyUI/main.py"
        "--listen"
        "0.0.0.0"
        "--port"
        "8188"
      ];
      probePath = "/system_stats";
    };
  };
}
