# Every hydra module; hosts import this one file.
{
  imports = [
    ./gpus.nix
    ./health-agent.nix
  ];
}
