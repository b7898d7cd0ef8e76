"""The durable alert outbox: write first, deliver per sink at-least-once, mark on success.

`Outbox.fire` / `Outbox.resolve` commit the alert and one pending delivery per configured
sink in one SQLite transaction before anything is sent. One `Deliverer` task per sink sends
what is due in order, marks each row delivered only after the sink said yes, and on failure
backs off exponentially (with jitter) before trying that sink again. A killed agent resumes
from the table: nothing committed is lost, a delivery in flight is simply sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import Callable

import aiohttp

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.alerts import Sink
from hydra_fleet.health.alerts.alertmanager import Alertmanager
from hydra_fleet.health.alerts.ntfy import Ntfy
from hydra_fleet.health.alerts.redis_stream import RedisStream
from hydra_fleet.health.alerts.webhook import Webhook
from hydra_fleet.health.clock import Clock
from hydra_fleet.health.config import Alerts
from hydra_fleet.health.store import Alert, AsyncStore, Store

log = get_logger("hydra.health.alerts")


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def make_sinks(config: Alerts, session: aiohttp.ClientSession, clock: Clock) -> list[Sink]:
    sinks: list[Sink] = []
    s = config.sinks
    if s.alertmanager is not None:
        sinks.append(Alertmanager(s.alertmanager, session, config.send_timeout, clock.wall))
    if s.ntfy is not None:
        sinks.append(Ntfy(s.ntfy, session, config.send_timeout))
    if s.webhook is not None:
        sinks.append(Webhook(s.webhook, session, config.send_timeout))
    if s.redis is not None:
        sinks.append(RedisStream(s.redis, config.send_timeout))
    return sinks


class Outbox:
    def __init__(
        self,
        store: AsyncStore,
        clock: Clock,
        config: Alerts,
        sinks: list[Sink],
        *,
        on_delivery: Callable[[str, bool], None] = lambda sink, ok: None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.sinks = sinks
        self.on_delivery = on_delivery
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wake = {sink.name: asyncio.Event() for sink in sinks}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def fire(self, labels: dict[str, str], annotations: dict[str, str]) -> int | None:
        """Queue a firing alert unless the same alert (labels) is already firing."""
        fp = fingerprint(labels)
        last = await self.store.call(Store.last_alert, fp)
        if last is not None and last.status == "firing":
            return None
        now = self.clock.wall()
        return await self._enqueue(
            fp,
            status="firing",
            labels=labels,
            annotations=annotations,
            starts_at=now,
            ends_at=None,
            now=now,
        )

    async def resolve(self, labels: dict[str, str], annotations: dict[str, str]) -> int | None:
        """Queue the resolution of a firing alert (nothing if it is not firing)."""
        fp = fingerprint(labels)
        last = await self.store.call(Store.last_alert, fp)
        if last is None or last.status != "firing":
            return None
        now = self.clock.wall()
        return await self._enqueue(
            fp,
            status="resolved",
            labels=labels,
            annotations=annotations,
            starts_at=last.starts_at,
            ends_at=now,
            now=now,
        )

    async def _enqueue(
        self,
        fp: str,
        *,
        status: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        starts_at: float,
        ends_at: float | None,
        now: float,
    ) -> int | None:
        key = f"{fp}:{status}:{starts_at:.6f}"
        alert_id = await self.store.call(
            Store.enqueue,
            dedup_key=key,
            fingerprint=fp,
            status=status,
            labels=labels,
            annotations=annotations,
            starts_at=starts_at,
            ends_at=ends_at,
            now=now,
            sinks=self.sink_names,
        )
        log.info("alert queued", alertname=labels.get("alertname"), status=status, key=key)
        for event in self._wake.values():
            event.set()
        return alert_id

    def start(self) -> None:
        for sink in self.sinks:
            self._tasks.append(asyncio.create_task(self._deliver_loop(sink)))
            if isinstance(sink, Alertmanager):
                self._tasks.append(asyncio.create_task(self._refresh_loop(sink)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self.sinks:
            await sink.close()

    def retry_delay(self, attempts: int) -> float:
        delay = min(self.config.retry_max, self.config.retry_base * 2.0 ** max(0, attempts - 1))
        return delay / 2 + self.rng.uniform(0, delay / 2)

    async def deliver_due(self, sink: Sink) -> bool:
        """Send what is due for `sink`, oldest first; stop at the first failure (True: all sent)."""
        due = await self.store.call(Store.pending, sink.name, self.clock.wall())
        for alert, attempts in due:
            try:
                await sink.send(alert)
            except Exception as err:  # noqa: BLE001 - any failure leaves the row for a retry
                delay = self.retry_delay(attempts + 1)
                error = f"{type(err).__name__}: {err}"
                await self.store.call(
                    Store.mark_failed, alert.id, sink.name, self.clock.wall() + delay, error
                )
                self.on_delivery(sink.name, False)
                log.warning(
                    "alert delivery failed",
                    sink=sink.name,
                    alert=alert.id,
                    attempt=attempts + 1,
                    retry_in_s=round(delay, 2),
                    error=error,
                )
                return False
            await self.store.call(Store.mark_delivered, alert.id, sink.name, self.clock.wall())
            self.on_delivery(sink.name, True)
            log.info("alert delivered", sink=sink.name, alert=alert.id, status=alert.status)
        return True

    async def _deliver_loop(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        while True:
            wake.clear()
            try:
                await self.deliver_due(sink)
            except Exception:
                log.exception("delivery round failed", sink=sink.name)
            next_due = await self.store.call(Store.next_due, sink.name)
            pause = 30.0 if next_due is None else next_due - self.clock.wall()
            pause = min(30.0, max(0.05, pause))
            sleeper = asyncio.create_task(self.clock.sleep(pause))
            waiter = asyncio.create_task(wake.wait())
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            waiter.cancel()

    async def _refresh_loop(self, sink: Alertmanager) -> None:
        """Re-post every firing alert each resend interval so Alertmanager keeps it active."""
        while True:
            await self.clock.sleep(sink.config.resend_interval)
            firing = await self.store.call(Store.firing)
            if not firing:
                continue
            try:
                await sink.post(firing)
            except Exception as err:  # noqa: BLE001 - the next round tries again
                log.warning("alertmanager refresh failed", error=f"{type(err).__name__}: {err}")


__all__ = ["Alert", "Outbox", "fingerprint", "make_sinks"]
