"""Alert sinks and the durable outbox that feeds them."""

from __future__ import annotations

from typing import Protocol

from hydra_fleet.health.store import Alert


class SinkError(Exception):
    """A delivery that did not succeed; it stays in the outbox and is retried."""


class Sink(Protocol):
    name: str

    async def send(self, alert: Alert) -> None:
        """Deliver one alert or raise `SinkError` (or an OSError/aiohttp error)."""

    async def close(self) -> None: ...


def iso(ts: float) -> str:
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")
