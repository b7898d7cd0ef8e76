"""A minimal service on the shared server runner, started as a subprocess by the tests."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from hydra_fleet.core.log import setup_logging
from hydra_fleet.core.server import serve


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="hello\n")


def main() -> int:
    setup_logging()
    app = web.Application()
    app.router.add_get("/", hello)
    asyncio.run(serve(app, "127.0.0.1", int(sys.argv[1]), bind_timeout=float(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
