# Every hydra module; hosts import this one file.
{
  imports = [
    ./deploy.nix
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
