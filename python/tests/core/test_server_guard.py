"""The connection guard: idle and slow (slowloris) peers are closed, and a cap evicts the
connection waiting longest, so a new scraper always gets in."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import web

from hydra_fleet.core.server import ConnectionGuard, serve
from tests.net import free_port


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="hello\n")


@contextlib.asynccontextmanager
async def serving(guard: ConnectionGuard) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", hello)
    port = free_port()
    stop = asyncio.Event()
    started = asyncio.Event()

    async def on_started() -> None:
        started.set()

    task = asyncio.create_task(
        serve(app, "127.0.0.1", port, on_started=on_started, stop=stop, guard=guard)
    )
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (EOF or reset)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                if not await reader.read(4096):
                    return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    guard = ConnectionGuard(header_timeout=5.0, idle_timeout=0.3)
    async with serving(guard) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        assert await closed_within(reader, 10)
        assert time.monotonic() - started >= 0.25
        writer.close()
    assert guard.closed["idle"] == 1


async def test_a_slowloris_is_closed_after_the_header_timeout_though_it_keeps_sending() -> None:
    guard = ConnectionGuard(header_timeout=0.5, idle_timeout=30.0)
    async with serving(guard) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                while True:
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        assert await closed_within(reader, 10)
        sender.cancel()
        writer.close()
    assert guard.closed["header"] == 1


async def test_a_keepalive_connection_is_closed_once_idle_after_its_request() -> None:
    guard = ConnectionGuard(header_timeout=5.0, idle_timeout=0.3)
    async with serving(guard) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"hello\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        assert await closed_within(reader, 10)
        writer.close()


async def test_at_the_cap_a_new_scraper_evicts_the_longest_waiting_connection() -> None:
    guard = ConnectionGuard(header_timeout=60.0, idle_timeout=60.0, max_connections=8)
    async with serving(guard) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        try:
            for _ in range(5):
                assert (await get(port)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
            assert len(guard.conns) <= 8
            assert guard.closed["evicted"] >= 22
        finally:
            for sock in held:
                sock.close()
