"""HTTP endpoints: `/metrics`, `/healthz` (the agent itself), `/status` (JSON), `/`, `/fleet`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hydra_fleet.health import page
from hydra_fleet.health.agent import Agent

AGENT_KEY = web.AppKey("agent", Agent)


async def metrics(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    await agent.refresh_outbox_metrics()
    body = generate_latest(agent.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    ok, detail = request.app[AGENT_KEY].alive()
    text = ("ok: " if ok else "") + detail + "\n"
    return web.Response(text=text, status=200 if ok else 503)


def make_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    page.add_routes(app, agent)  # /status, / and /fleet
    return app
