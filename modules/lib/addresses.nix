# Listen addresses, as the modules reason about them.
{ lib }:

{
  # A service bound here can be reached only from the host itself.
  isLoopback = host: host == "localhost" || host == "::1" || lib.hasPrefix "127." host;

  # Where a local client reaches a service: a wildcard bind is reached on loopback.
  localHost =
    host:
    if
      lib.elem host [
        ""
        "0.0.0.0"
        "::"
        "[::]"
      ]
    then
      "127.0.0.1"
    else
      host;
}
