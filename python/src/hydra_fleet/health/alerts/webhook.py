"""A generic JSON webhook: one POST per alert; any 2xx is success."""

from __future__ import annotations

from typing import Any

import aiohttp

from hydra_fleet.health.alerts import SinkError, iso
from hydra_fleet.health.config import WebhookSink
from hydra_fleet.health.store import Alert


def payload(alert: Alert) -> dict[str, Any]:
    return {
        "version": "hydra-health/1",
        "id": alert.id,
        "dedupKey": alert.dedup_key,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": iso(alert.starts_at),
        "endsAt": iso(alert.ends_at) if alert.ends_at is not None else None,
    }


class Webhook:
    name = "webhook"

    def __init__(self, config: WebhookSink, session: aiohttp.ClientSession, timeout: float) -> None:
        self.config = config
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = config.headers()

    async def send(self, alert: Alert) -> None:
        async with self.session.post(
            self.config.url, json=payload(alert), headers=self.headers, timeout=self.timeout
        ) as resp:
            if not 200 <= resp.status < 300:
                raise SinkError(f"webhook answered HTTP {resp.status}")

    async def close(self) -> None:
        pass
