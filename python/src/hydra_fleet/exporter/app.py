"""The HTTP side: /metrics, /healthz and /. Collection and its sharing live in `cache`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from hydra_fleet.exporter import page
from hydra_fleet.exporter.cache import Exporter

__all__ = ["EXPORTER", "Exporter", "make_app"]

EXPORTER = web.AppKey("exporter", Exporter)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[EXPORTER].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def healthz(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    return web.json_response(
        {
            "status": "ok",
            "backends": {b.name: b.name not in exporter.failing for b in exporter.backends},
        }
    )


def make_app(exporter: Exporter) -> web.Application:
    app = web.Application()
    app[EXPORTER] = exporter

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        app[EXPORTER].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", page.index)
    return app
