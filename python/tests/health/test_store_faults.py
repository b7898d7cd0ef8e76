"""The store under faults: clock jumps, a corrupt file, a full disk at start and mid-delivery."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hydra_fleet.core.errors import EX_TEMPFAIL
from hydra_fleet.health.agent import DB_NAME
from hydra_fleet.health.alerts.outbox import Outbox, make_sinks
from hydra_fleet.health.clock import FakeClock, SystemClock
from hydra_fleet.health.config import Alerts, Sinks, WebhookSink
from hydra_fleet.health.store import AsyncStore, StateTemporaryError, Store, open_store
from tests.health.servers import http_server
from tests.health.test_agent import config, running, wait_for
from tests.health.test_full_disk import fill, tmpfs
from tests.installed import command_argv
from tests.net import free_port

YEAR = 365 * 24 * 3600.0
LABELS = {"alertname": "HydraCheckDown", "check": "c", "host": "h", "severity": "warning"}


class Hook:
    """A webhook receiver that answers 503 until `up`, counting what it accepted."""

    def __init__(self) -> None:
        self.up = False
        self.accepted: Counter[str] = Counter()
        self.requests = 0

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.requests += 1
            if not self.up:
                return web.Response(status=503)
            self.accepted[(await request.json())["dedupKey"]] += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app


def alerts_config(port: int, retry_max: float = 300.0) -> Alerts:
    return Alerts(
        sinks=Sinks(webhook=WebhookSink(url=f"http://127.0.0.1:{port}/hook")),
        retry_base=0.05,
        retry_max=retry_max,
        send_timeout=2.0,
    )


async def test_a_forward_clock_jump_does_not_hold_the_queue(tmp_path: Path) -> None:
    """A send that failed while the clock was a year ahead is retried once the clock is
    right again, within the retry maximum, not a year later."""
    hook = Hook()
    clock = FakeClock()
    store = AsyncStore(tmp_path / DB_NAME)
    async with http_server(hook.app()) as port, aiohttp.ClientSession() as session:
        cfg = alerts_config(port)
        box = Outbox(store, clock, cfg, make_sinks(cfg, session, clock))
        (sink,) = box.sinks
        await box.fire(LABELS, {"summary": "down"})
        clock.jump(YEAR)  # a wrong clock (e.g. before NTP)
        assert not await box.deliver_due(sink)
        clock.jump(-YEAR)  # NTP fixes it; the sink comes back
        hook.up = True
        due = await store.call(Store.next_due, "webhook", clock.wall(), cfg.retry_max)
        assert due is not None
        assert due <= clock.wall() + cfg.retry_max
        assert await box.deliver_due(sink)
        assert sum(hook.accepted.values()) == 1
    store.close()


def test_retry_times_are_per_row_and_bounded(tmp_path: Path) -> None:
    """mark_failed sets the held time, it does not keep the largest one ever seen."""
    store = Store(tmp_path / DB_NAME)
    ids = [
        store.enqueue(
            dedup_key=f"k{i}",
            fingerprint=f"f{i}",
            status="firing",
            labels={"alertname": "A"},
            annotations={},
            starts_at=1.0,
            ends_at=None,
            now=1000.0,
            sinks=["webhook"],
            hold_max=300.0,
        )
        for i in range(2)
    ]
    assert None not in ids
    first = ids[0]
    assert first is not None
    store.mark_failed(first, "webhook", 1000.0 + YEAR, "HTTP 503")  # the clock was ahead
    store.mark_failed(first, "webhook", 1010.0, "HTTP 503")  # the next failure, clock right
    assert store.pending("webhook", 1005.0, hold_max=300.0) == []
    assert len(store.pending("webhook", 1010.0, hold_max=300.0)) == 2
    # a new alert behind a held queue is held no longer than hold_max from its own time
    store.mark_failed(first, "webhook", 1000.0 + YEAR, "HTTP 503")
    third = store.enqueue(
        dedup_key="k3",
        fingerprint="f3",
        status="firing",
        labels={"alertname": "A"},
        annotations={},
        starts_at=1.0,
        ends_at=None,
        now=1000.0,
        sinks=["webhook"],
        hold_max=300.0,
    )
    row = store.db.execute("SELECT next_try FROM deliveries WHERE alert_id = ?", (third,))
    assert row.fetchone()[0] == 1300.0
    # and a row held beyond the bound counts as due now (the new one is not due yet)
    assert [a.id for a, _ in store.pending("webhook", 1000.0, hold_max=300.0)] == ids
    assert store.next_due("webhook", 1000.0, 300.0) == 1000.0
    store.close()


def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    path.write_bytes(b"this is not an SQLite database, it was truncated by a crash " * 100)
    store = open_store(path)
    try:
        assert store.reset_from is not None
        assert store.reset_from.read_bytes().startswith(b"this is not an SQLite")
        assert store.listing() == []
        store.touch(1.0)
    finally:
        store.close()
    again = open_store(path)  # the fresh one is fine: nothing moved this time
    assert again.reset_from is None
    again.close()


async def test_the_agent_alerts_when_it_had_to_start_a_fresh_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_NAME).write_bytes(b"\x00garbage" * 512)
    async with running(config(tmp_path, {})) as agent:
        assert agent.store is not None
        firing = await agent.store.call(Store.firing)
    assert [a.labels["alertname"] for a in firing] == ["HydraHealthStateReset"]
    assert "corrupt" in firing[0].annotations["summary"]
    assert list(state.glob(f"{DB_NAME}.corrupt-*"))


def test_a_full_disk_at_start_is_a_temporary_failure(tmp_path: Path) -> None:
    """No room for a new database: exit 75 (systemd tries again), not 78 (gives up)."""
    with tmpfs(tmp_path / "state", "64k") as state:
        fill(state)
        with pytest.raises(StateTemporaryError) as caught:
            open_store(state / DB_NAME)
        assert caught.value.exit_code == EX_TEMPFAIL
        cfg = tmp_path / "health.json"
        cfg.write_text(json.dumps({"stateDir": str(state), "port": free_port()}))
        result = subprocess.run(
            [*command_argv("hydra-health"), "run", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot open the state database" in result.stderr


async def test_a_delivery_that_cannot_be_marked_is_not_sent_again(tmp_path: Path) -> None:
    """Alerts committed, then the disk fills and the sink comes back: each alert is sent
    once (the mark waits in memory), the sink is not flooded, and once space is back the
    marks are stored and nothing is pending."""
    hook = Hook()
    with tmpfs(tmp_path / "state", "512k") as state:
        store = AsyncStore(state / DB_NAME)
        async with http_server(hook.app()) as port, aiohttp.ClientSession() as session:
            cfg = alerts_config(port, retry_max=0.5)
            clock = SystemClock()
            box = Outbox(store, clock, cfg, make_sinks(cfg, session, clock))
            for i in range(3):
                await box.fire({**LABELS, "check": f"c{i}"}, {"summary": "down"})
            box.start()
            await wait_for(lambda: hook.requests >= 1)  # failing: the sink is down
            filler = fill(state)
            hook.up = True
            await wait_for(lambda: sum(hook.accepted.values()) == 3)
            assert box.store_error is not None
            await asyncio.sleep(1.5)  # rounds keep running; none may re-send
            assert max(hook.accepted.values()) == 1
            filler.unlink()
            await wait_for(lambda: box.store_error is None and not box.unmarked)
            await box.stop()
        stats = await store.call(Store.outbox_stats, clock.wall())
        store.close()
    assert stats == {}
    assert sorted(hook.accepted.values()) == [1, 1, 1]
