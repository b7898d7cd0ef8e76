"""The systemd notification protocol, written directly to `$NOTIFY_SOCKET`.

A path socket is used as is; a name starting with `@` is an abstract socket. Without
`$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

from hydra_fleet.core.log import get_logger

log = get_logger("hydra.sdnotify")


class Notifier:
    """Sends `KEY=value` datagrams to the service manager."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; return whether it was delivered."""
        if not self.enabled:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, target)
        except OSError as err:
            log.warning("sd_notify failed", socket=self.address, error=str(err))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
