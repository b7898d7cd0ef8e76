"""Real loopback peers for the checks: answering, failing, hanging and never accepting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

from aiohttp import web


@contextlib.asynccontextmanager
async def http_server(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        await runner.cleanup()


def status_app() -> web.Application:
    """/ok 200 "ready", /fail 500, /hang accepts and never answers."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="model ready")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="engine dead")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(text="never")

    async def complete(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("max_tokens") != 1:
            return web.json_response({"error": "expected max_tokens 1"}, status=400)
        return web.json_response({"choices": [{"text": "hi"}]})

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/hang", hang)
    return app


@contextlib.asynccontextmanager
async def silent_tcp_server() -> AsyncIterator[int]:
    """Accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()


@contextlib.contextmanager
def never_accepting() -> Iterator[int]:
    """A listening socket whose accept queue is full: new SYNs are dropped, connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(8):  # fill the queue (backlog 0 still admits one or two)
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
