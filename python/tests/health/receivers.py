"""Alert receivers shaped like the real ones, recording what they are sent."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from aiohttp import web

ALERT_KEYS = {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Receiver:
    """A webhook/ntfy/Alertmanager-shaped receiver. `hold` makes requests wait."""

    def __init__(self) -> None:
        self.webhook: list[dict[str, Any]] = []
        self.ntfy: list[tuple[str, dict[str, str], str]] = []
        self.alertmanager: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.requests = 0
        self.arrived = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._webhook)
        app.router.add_post("/api/v2/alerts", self._alertmanager)
        app.router.add_post("/{topic}", self._ntfy)
        return app

    async def _wait(self) -> None:
        self.requests += 1
        if self.hold is not None:
            await self.hold.wait()

    async def _webhook(self, request: web.Request) -> web.Response:
        await self._wait()
        self.webhook.append(await request.json())
        self.arrived.set()
        return web.Response(status=204)

    async def _ntfy(self, request: web.Request) -> web.Response:
        await self._wait()
        headers = {k: v for k, v in request.headers.items() if k in ("Title", "Priority", "Tags")}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        self.ntfy.append((request.match_info["topic"], headers, await request.text()))
        self.arrived.set()
        return web.json_response({"id": "x"})

    async def _alertmanager(self, request: web.Request) -> web.Response:
        """Validates the v2 `postableAlerts` shape as Alertmanager's API would."""
        await self._wait()
        body = await request.json()
        if not isinstance(body, list):
            return web.json_response({"message": "expected a list"}, status=400)
        for alert in body:
            if not isinstance(alert, dict) or not set(alert) <= ALERT_KEYS:
                return web.json_response({"message": "unexpected fields"}, status=422)
            if not isinstance(alert.get("labels"), dict) or not alert["labels"]:
                return web.json_response({"message": "labels required"}, status=422)
            for key in ("startsAt", "endsAt"):
                parse_time(alert[key])
        self.alertmanager.extend(body)
        self.arrived.set()
        return web.Response(status=200)

    def webhook_keys(self) -> set[str]:
        return {item["dedupKey"] for item in self.webhook}
