# How the rest of the fleet reaches this host: the address written into the scrape-target
# file for hydra-storage's Prometheus and into l's Prometheus.
{
  config,
  lib,
  ...
}:

{
  options.hydra.fleet.address = lib.mkOption {
    type = lib.types.str;
    default = config.networking.hostName;
    defaultText = lib.literalExpression "config.networking.hostName";
    example = "192.168.1.20";
    description = ''
      Name or IP address at which other machines on the LAN reach this host. The default, the
      host name, needs LAN DNS (the router's or hydra-storage's) to resolve it; set an IP
      address otherwise.
    '';
  };
}
