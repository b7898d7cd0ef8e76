"""A warning for an engine reachable beyond loopback with no API key in front of it."""

from __future__ import annotations

import ipaddress

from hydra_fleet.launcher.config import Instance


def listen_address(instance: Instance) -> str:
    # `host` is being renamed `listenAddress`; read whichever this version has.
    value = getattr(instance, "listen_address", None) or getattr(instance, "host", "127.0.0.1")
    return str(value)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever the network says


def exposure_warning(instance: Instance) -> str | None:
    """One line to log when anyone on the network can use the engine, else None."""
    address = listen_address(instance)
    if is_loopback(address) or instance.api_key_file:
        return None
    if instance.engine == "ollama":
        fix = "Ollama has no API keys: keep it on 127.0.0.1 and put the gateway in front"
    elif instance.engine == "command":
        fix = "keep it on 127.0.0.1 behind a proxy that checks a key"
    else:
        fix = "set apiKeyFile, or listen on 127.0.0.1 behind the gateway"
    return (
        f"instance {instance.name!r} ({instance.engine}) listens on {address}:{instance.port} "
        f"with no API key: anyone who reaches this port can use it; {fix}"
    )
