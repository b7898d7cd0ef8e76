# Every hydra module; hosts import this one file.
{
  imports = [
    ./fleet.nix
    ./gpus.nix
    ./nvidia.nix
    ./rocm.nix
    ./unfree.nix
  ];
}
