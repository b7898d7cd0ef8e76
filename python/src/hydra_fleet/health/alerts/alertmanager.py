"""Alertmanager v2: `POST /api/v2/alerts` with a list of alerts.

A firing alert is posted with `endsAt` a few resend intervals ahead and re-posted every
`resendInterval` while it fires, so Alertmanager never lets it expire; a resolved one is
posted with `endsAt` = the time it resolved.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from hydra_fleet.health.alerts import SinkError, iso
from hydra_fleet.health.config import AlertmanagerSink
from hydra_fleet.health.store import Alert

EXPIRY_INTERVALS = 4


def payload(
    alert: Alert, now: float, resend_interval: float, generator_url: str = ""
) -> dict[str, Any]:
    if alert.status == "firing":
        ends = now + EXPIRY_INTERVALS * resend_interval
    else:
        ends = alert.ends_at if alert.ends_at is not None else now
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": iso(alert.starts_at),
        "endsAt": iso(ends),
        # Alertmanager and its receivers link this: the agent's status page, where the check's
        # state, detail and budget are.
        "generatorURL": alert.annotations.get("generatorURL", generator_url),
    }


class Alertmanager:
    name = "alertmanager"

    def __init__(
        self,
        config: AlertmanagerSink,
        session: aiohttp.ClientSession,
        timeout: float,
        now: Any,
        generator_url: str = "",
    ) -> None:
        self.config = config
        self.generator_url = generator_url
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.now = now
        self.url = config.url.rstrip("/") + "/api/v2/alerts"

    async def post(self, alerts: list[Alert]) -> None:
        interval = self.config.resend_interval
        body = [payload(a, self.now(), interval, self.generator_url) for a in alerts]
        async with self.session.post(self.url, json=body, timeout=self.timeout) as resp:
            if resp.status != 200:
                raise SinkError(f"alertmanager answered HTTP {resp.status}")

    async def send(self, alert: Alert) -> None:
        await self.post([alert])

    async def close(self) -> None:
        pass
