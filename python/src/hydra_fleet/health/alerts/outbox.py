"""The durable alert outbox: write first, deliver per sink at-least-once, mark on success.

`Outbox.fire` / `Outbox.resolve` commit the alert and one pending delivery per configured
sink in one SQLite transaction before anything is sent. One `Deliverer` task per sink sends
what is due in order, marks each row delivered only after the sink said yes, and on failure
backs off exponentially (with jitter) before trying that sink again. A killed agent resumes
from the table: nothing committed is lost, a delivery in flight is simply sent again.

When the store cannot write (a full disk), nothing is lost either: an alert that could not
be committed is kept in memory, in order, and committed by a retry loop (with backoff) once
the store accepts writes again, then delivered; a delivery that succeeded but could not be
marked is remembered in memory, so it is not sent again. `store_error` says why the store
is failing (the agent's /healthz answers 503 while it is set). A failed round of a sink
backs off like a failed send, so a failing store never turns into a re-send storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.alerts import Sink
from hydra_fleet.health.alerts.alertmanager import Alertmanager
from hydra_fleet.health.alerts.ntfy import Ntfy
from hydra_fleet.health.alerts.redis_stream import RedisStream
from hydra_fleet.health.alerts.webhook import Webhook
from hydra_fleet.health.clock import Clock
from hydra_fleet.health.config import Alerts
from hydra_fleet.health.store import Alert, AsyncStore, Store, is_write_failure

log = get_logger("hydra.health.alerts")


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def make_sinks(
    config: Alerts, session: aiohttp.ClientSession, clock: Clock, status_url: str = ""
) -> list[Sink]:
    """The configured sinks; `status_url` (the agent's status page) is where alerts link to."""
    sinks: list[Sink] = []
    s = config.sinks
    if s.alertmanager is not None:
        sinks.append(
            Alertmanager(s.alertmanager, session, config.send_timeout, clock.wall, status_url)
        )
    if s.ntfy is not None:
        sinks.append(Ntfy(s.ntfy, session, config.send_timeout))
    if s.webhook is not None:
        sinks.append(Webhook(s.webhook, session, config.send_timeout))
    if s.redis is not None:
        sinks.append(RedisStream(s.redis, config.send_timeout))
    return sinks


@dataclasses.dataclass(frozen=True)
class _Unsaved:
    """An alert the store did not accept yet: the arguments of `Store.enqueue`."""

    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    now: float

    @property
    def dedup_key(self) -> str:
        return f"{self.fingerprint}:{self.status}:{self.starts_at:.6f}"


class Outbox:
    def __init__(
        self,
        store: AsyncStore,
        clock: Clock,
        config: Alerts,
        sinks: list[Sink],
        *,
        on_delivery: Callable[[str, bool], None] = lambda sink, ok: None,
        on_store_error: Callable[[str], None] = lambda error: None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.sinks = sinks
        self.on_delivery = on_delivery
        self.on_store_error = on_store_error
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wake = {sink.name: asyncio.Event() for sink in sinks}
        self._tasks: list[asyncio.Task[None]] = []
        self.unsaved: list[_Unsaved] = []  # alerts to commit, oldest first
        self.unmarked: dict[tuple[int, str], float] = {}  # (alert id, sink) -> delivered at
        self.store_error: str | None = None
        self._flush_wake = asyncio.Event()
        self._seen: dict[str, tuple[str, float] | None] = {}  # fingerprint -> newest alert

    def _store_failed(self, what: str, err: BaseException) -> None:
        error = f"{type(err).__name__}: {err}"
        if self.store_error is None:
            log.error("state store write failed; holding alerts in memory", op=what, error=error)
        self.store_error = error
        self.on_store_error(error)
        self._flush_wake.set()

    async def _last(self, fp: str) -> tuple[str, float] | None:
        """(status, starts_at) of the newest alert for `fp`: held in memory, seen before by
        this process (the only writer), or read from the store."""
        for item in reversed(self.unsaved):
            if item.fingerprint == fp:
                return item.status, item.starts_at
        if fp in self._seen:
            return self._seen[fp]
        last = await self.store.call(Store.last_alert, fp)
        found = None if last is None else (last.status, last.starts_at)
        self._seen[fp] = found
        return found

    @property
    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def fire(self, labels: dict[str, str], annotations: dict[str, str]) -> int | None:
        """Queue a firing alert unless the same alert (labels) is already firing."""
        fp = fingerprint(labels)
        last = await self._last(fp)
        if last is not None and last[0] == "firing":
            return None
        now = self.clock.wall()
        return await self._enqueue(_Unsaved(fp, "firing", labels, annotations, now, None, now))

    async def resolve(self, labels: dict[str, str], annotations: dict[str, str]) -> int | None:
        """Queue the resolution of a firing alert (nothing if it is not firing)."""
        fp = fingerprint(labels)
        last = await self._last(fp)
        if last is None or last[0] != "firing":
            return None
        now = self.clock.wall()
        return await self._enqueue(_Unsaved(fp, "resolved", labels, annotations, last[1], now, now))

    async def _commit(self, item: _Unsaved) -> int | None:
        return await self.store.call(
            Store.enqueue,
            dedup_key=item.dedup_key,
            fingerprint=item.fingerprint,
            status=item.status,
            labels=item.labels,
            annotations=item.annotations,
            starts_at=item.starts_at,
            ends_at=item.ends_at,
            now=item.now,
            sinks=self.sink_names,
            hold_max=self.config.retry_max,
        )

    async def _enqueue(self, item: _Unsaved) -> int | None:
        """Commit the alert; if the store fails, keep it (after any older ones) for the
        flush loop. Returns the row id, or None (a duplicate, or held in memory)."""
        self._seen[item.fingerprint] = (item.status, item.starts_at)
        fields: dict[str, Any] = {
            "alertname": item.labels.get("alertname"),
            "status": item.status,
            "key": item.dedup_key,
        }
        if self.unsaved:  # keep the order: behind those already waiting
            self.unsaved.append(item)
            log.warning("alert held in memory", held=len(self.unsaved), **fields)
            self._flush_wake.set()
            return None
        try:
            alert_id = await self._commit(item)
        except Exception as err:
            if not is_write_failure(err):
                raise
            self.unsaved.append(item)
            self._store_failed("enqueue", err)
            log.warning("alert held in memory", held=len(self.unsaved), **fields)
            return None
        log.info("alert queued", **fields)
        self._wake_all()
        return alert_id

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    async def flush(self) -> bool:
        """Commit what is held in memory, in order; True when nothing is left."""
        while self.unsaved:
            try:
                await self._commit(self.unsaved[0])
            except Exception as err:
                if not is_write_failure(err):
                    raise
                self._store_failed("enqueue", err)
                return False
            item = self.unsaved.pop(0)
            log.info(
                "held alert queued", alertname=item.labels.get("alertname"), key=item.dedup_key
            )
        for (alert_id, sink), at in list(self.unmarked.items()):
            try:
                await self.store.call(Store.mark_delivered, alert_id, sink, at)
            except Exception as err:
                if not is_write_failure(err):
                    raise
                self._store_failed("mark_delivered", err)
                return False
            del self.unmarked[(alert_id, sink)]
        if self.store_error is not None:
            try:
                await self.store.call(Store.touch, self.clock.wall())
            except Exception as err:
                if not is_write_failure(err):
                    raise
                self._store_failed("touch", err)
                return False
            log.info("state store writable again; held alerts committed")
            self.store_error = None
        self._wake_all()
        return True

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            try:
                done = await self.flush()
            except Exception:
                log.exception("flushing held alerts failed")
                done = False
            if done:
                failures = 0
                continue
            failures += 1
            await self.clock.sleep(min(30.0, self.retry_delay(failures)))
            self._flush_wake.set()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._flush_loop()))
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
        due = await self.store.call(
            Store.pending, sink.name, self.clock.wall(), hold_max=self.config.retry_max
        )
        for alert, attempts in due:
            if (alert.id, sink.name) in self.unmarked:
                continue  # sent; only the mark is waiting for the store
            try:
                await sink.send(alert)
            except Exception as err:  # noqa: BLE001 - any failure leaves the row for a retry
                delay = self.retry_delay(attempts + 1)
                error = f"{type(err).__name__}: {err}"
                self.on_delivery(sink.name, False)
                try:
                    await self.store.call(
                        Store.mark_failed, alert.id, sink.name, self.clock.wall() + delay, error
                    )
                except Exception as store_err:
                    if not is_write_failure(store_err):
                        raise
                    self._store_failed("mark_failed", store_err)
                log.warning(
                    "alert delivery failed",
                    sink=sink.name,
                    alert=alert.id,
                    attempt=attempts + 1,
                    retry_in_s=round(delay, 2),
                    error=error,
                )
                return False
            self.on_delivery(sink.name, True)
            log.info("alert delivered", sink=sink.name, alert=alert.id, status=alert.status)
            delivered_at = self.clock.wall()
            try:
                await self.store.call(Store.mark_delivered, alert.id, sink.name, delivered_at)
            except Exception as err:
                if not is_write_failure(err):
                    raise
                self.unmarked[(alert.id, sink.name)] = delivered_at
                self._store_failed("mark_delivered", err)
                return False
        return True

    async def _deliver_loop(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        failures = 0  # rounds in a row that did not send everything due
        while True:
            wake.clear()
            try:
                ok = await self.deliver_due(sink)
            except Exception:
                log.exception("delivery round failed", sink=sink.name)
                ok = False
            failures = 0 if ok else failures + 1
            try:
                next_due = await self.store.call(
                    Store.next_due, sink.name, self.clock.wall(), self.config.retry_max
                )
            except Exception:  # noqa: BLE001 - the backoff below still applies
                next_due = None
            pause = 30.0 if next_due is None else next_due - self.clock.wall()
            pause = min(30.0, max(0.05, pause))
            if failures:  # a failing sink or store: never sooner than the retry backoff
                pause = max(pause, self.retry_delay(failures))
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
