# Every hydra module; hosts import this one file.
{
  imports = [
    ./fleet.nix
    ./gpu-exporter.nix
    ./gpus.nix
    ./health-agent.nix
    ./inference.nix
    ./nvidia.nix
    ./rocm.nix
    ./unfree.nix
  ];
}
