"""Run an aiohttp application until SIGTERM/SIGINT, surviving quick restarts on the same port.

The listening socket is made here, with `SO_REUSEADDR`, so connections of a previous
instance still in TIME_WAIT do not block the bind. When the port is really held (the old
instance has not exited yet), the bind is retried with capped exponential backoff for about
`bind_timeout` seconds before giving up with a `BindError`.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from hydra_fleet.core.errors import BindError
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.sdnotify import Notifier

log = get_logger("hydra.server")

FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 2.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on `host:port` once; raises OSError as the kernel reports it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def bind_with_retry(host: str, port: int, bind_timeout: float = 20.0) -> socket.socket:
    """Bind, retrying EADDRINUSE with capped exponential backoff until `bind_timeout` passes."""
    deadline = time.monotonic() + bind_timeout
    delay = FIRST_RETRY_DELAY
    attempt = 1
    while True:
        try:
            return bind_socket(host, port)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise BindError(f"cannot listen on {host}:{port}: {err.strerror}") from err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BindError(
                    f"cannot listen on {host}:{port}: address still in use after "
                    f"{bind_timeout:g} s and {attempt} attempts; find the holder with "
                    f"`ss -ltnp 'sport = :{port}'` or choose another port"
                ) from err
            if attempt == 1:
                log.warning("address in use, retrying", address=f"{host}:{port}")
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_DELAY)
            attempt += 1


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    bind_timeout: float = 20.0,
    notifier: Notifier | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly.

    `on_started` runs once the socket listens; READY=1 is sent after it, so a service
    that must do more before it is ready (a first collection) can do it there.
    """
    notifier = notifier or Notifier()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        sock = await bind_with_retry(host, port, bind_timeout)
        site = web.SockSite(runner, sock)
        await site.start()
        bound = sock.getsockname()
        log.info("listening", address=f"{host}:{bound[1]}")
        if on_started is not None:
            await on_started()
        notifier.ready(f"listening on {host}:{bound[1]}")
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
