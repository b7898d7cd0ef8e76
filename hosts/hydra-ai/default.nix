# hydra-ai: RTX 5090 + RTX 4090. TabbyAPI (ExLlamaV2) serves one 70B model at 3.5 bpw split
# across both cards; only ExLlama splits a model across unequal cards.
{ pkgs, ... }:

let
  # TabbyAPI at the last commit that still has its ExLlamaV2 backend (79126f9, 2026-06-27; the
  # next, c8b9a8f, removed it and kept ExLlamaV3 only). The 70B model here is EXL2 at 3.5 bpw,
  # split by tensor parallel across the unequal 5090 + 4090, which only ExLlamaV2 does; moving on
  # means requantising to EXL3 first. The hash is of that commit's tree (git archive).
  tabbyapiSrc = pkgs.fetchFromGitHub {
    owner = "theroyallab";
    repo = "tabbyAPI";
    rev = "79126f904c2e00aece026b36bb70bbb87e4892b2";
    hash = "sha256-GO1FQ+tPSvb1eZ9tf/dKmwK+2H1SMQapHpbf9ABpevw=";
  };
in
{
  imports = [
    ../hardware-placeholder.nix
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
      # nixpkgs has no TabbyAPI: the pinned checkout above runs in the operator's virtualenv in
      # /var/lib/tabbyapi/venv (PyTorch and ExLlamaV2's CUDA wheels, matched to each other). No
      # `cd`: hydra-launch owns the working directory, where it writes TabbyAPI's config.yml.
      package = pkgs.writeShellApplication {
        name = "tabbyapi";
        text = ''
          exec /var/lib/tabbyapi/venv/bin/python ${tabbyapiSrc}/main.py "$@"
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
      # The checkout the launcher checks the model's quantization against before start: EXL2
      # needs the exllamav2 backend, which this pin has and later TabbyAPI does not.
      extraConfig.engineSource = "${tabbyapiSrc}";
      # Facts about the model, so the launcher's VRAM plan needs no model files to compute.
      modelInfo = (import ../models.nix)."llama-3.3-70b-exl2-3.5bpw";
    };
  };
}
