"""Run an aiohttp application until SIGTERM/SIGINT, surviving quick restarts on the same port
and a hostile LAN.

The listening socket is made here, with `SO_REUSEADDR`, so connections of a previous
instance still in TIME_WAIT do not block the bind. When the port is really held (the old
instance has not exited yet), the bind is retried with capped exponential backoff for about
`bind_timeout` seconds before giving up with a `BindError` (exit 75); an address that can
never be bound (not on this host, not resolvable, not permitted) is a `ListenAddressError`
(exit 78) at once.

Every connection goes through a `ConnectionGuard`: one that has sent no request for
`idle_timeout` seconds, or has not finished its request headers `header_timeout` seconds
after it began them (slowloris), is closed, and at most `max_connections` are open at once.
At the cap a new connection evicts the one that has waited longest without a request in
progress, so a flood of idle peers cannot keep a scraper out, and the process never runs
out of descriptors on their account.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hydra_fleet.core.errors import BindError, ListenAddressError
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.sdnotify import Notifier

log = get_logger("hydra.server")

FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 2.0

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS = 1024

# bind() errors that no restart can cure: the configuration must change (exit 78)
_UNUSABLE = {errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM, errno.EINVAL, errno.EAFNOSUPPORT}


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on `host:port` once; raises OSError as the kernel reports it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(511)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one (as Go programs do); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """`wanted`, but at most half the descriptors this process may hold (the rest are for
    the service's own work: checks, the database, the GPU)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft // 2))


@dataclasses.dataclass
class _Conn:
    transport: asyncio.Transport
    waiting_since: float  # connected, or finished its last request
    reading_since: float | None = None  # first byte of a request not yet handled
    in_handler: int = 0

    def stale_since(self) -> float:
        return self.reading_since if self.reading_since is not None else self.waiting_since


class ConnectionGuard:
    """Timeouts and a cap for every connection of one server (see the module docstring)."""

    def __init__(
        self,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.closed = {"idle": 0, "header": 0, "evicted": 0, "refused": 0}
        self._sweeper: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], Any]:
        return lambda: _GuardedProtocol(self, inner())

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = self.conns.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.in_handler += 1
        conn.reading_since = None
        try:
            return await handler(request)
        finally:
            conn.in_handler -= 1
            conn.waiting_since = time.monotonic()

    def admit(self, transport: asyncio.Transport) -> _Conn | None:
        now = time.monotonic()
        if len(self.conns) >= self.max_connections:
            idle = [c for c in self.conns.values() if c.in_handler == 0]
            if not idle:
                self.closed["refused"] += 1
                self._warn("connection refused: every slot is serving a request")
                return None
            victim = min(idle, key=_Conn.stale_since)
            self._drop(victim, "evicted")
            self._warn("connection cap reached, closing the longest-waiting connection")
        conn = _Conn(transport, now)
        self.conns[transport] = conn
        return conn

    def forget(self, transport: asyncio.BaseTransport) -> None:
        self.conns.pop(transport, None)

    def _drop(self, conn: _Conn, why: str) -> None:
        self.closed[why] += 1
        self.conns.pop(conn.transport, None)
        conn.transport.abort()

    def _warn(self, event: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning(event, cap=self.max_connections, closed=dict(self.closed))

    def sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.in_handler:
                continue
            if conn.reading_since is not None:
                if now - conn.reading_since > self.header_timeout:
                    self._drop(conn, "header")
            elif now - conn.waiting_since > self.idle_timeout:
                self._drop(conn, "idle")

    async def _sweep_loop(self) -> None:
        period = max(0.05, min(1.0, self.header_timeout / 4, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.sweep()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class _GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, telling the guard what the peer does."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.conn = self.guard.admit(transport)
        if self.conn is None:
            transport.abort()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        if conn.in_handler == 0 and conn.reading_since is None:
            conn.reading_since = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.conn is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is None:
            return
        self.guard.forget(self.conn.transport)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def bind_with_retry(host: str, port: int, bind_timeout: float = 20.0) -> socket.socket:
    """Bind, retrying EADDRINUSE with capped exponential backoff until `bind_timeout` passes."""
    deadline = time.monotonic() + bind_timeout
    delay = FIRST_RETRY_DELAY
    attempt = 1
    while True:
        try:
            return bind_socket(host, port)
        except socket.gaierror as err:
            raise ListenAddressError(
                f"cannot listen on {host}:{port}: the address does not resolve ({err.strerror})"
            ) from err
        except (UnicodeError, ValueError) as err:
            raise ListenAddressError(f"cannot listen on {host}:{port}: {err}") from err
        except OSError as err:
            if err.errno in _UNUSABLE:
                raise ListenAddressError(
                    f"cannot listen on {host}:{port}: {err.strerror}; choose an address of "
                    "this host (`ip -brief address`) or a port it may bind"
                ) from err
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
    guard: ConnectionGuard | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly.

    `on_started` runs once the socket listens; READY=1 is sent after it, so a service
    that must do more before it is ready (a first collection) can do it there. `guard`
    (default: the module's timeouts, and a cap of half the descriptor limit) protects
    the server from peers that open connections and never finish a request.
    """
    notifier = notifier or Notifier()
    stop = stop or asyncio.Event()
    raise_nofile_limit()
    guard = guard or ConnectionGuard(max_connections=connection_cap())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=2 * guard.idle_timeout,  # a backstop; the guard closes first
    )
    await runner.setup()
    server: asyncio.Server | None = None
    try:
        sock = await bind_with_retry(host, port, bind_timeout)
        assert runner.server is not None
        server = await loop.create_server(guard.protocol_factory(runner.server), sock=sock)
        guard.start()
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
        if server is not None:
            server.close()
        await guard.stop()
        await runner.cleanup()
