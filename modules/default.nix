# Every hydra module; hosts import this one file.
{
  imports = [
    ./deploy.nix
    ./gpu-exporter
    ./gpus.nix
    ./health-agent
    ./inference
    ./nvidia.nix
    ./rocm.nix
    ./unfree.nix
  ];
}
