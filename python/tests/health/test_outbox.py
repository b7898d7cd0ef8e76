"""The outbox delivering to real receivers: down-then-up sinks, Alertmanager v2, ntfy, Redis."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from hydra_fleet.core.config import Secret
from hydra_fleet.health.alerts.outbox import Outbox, make_sinks
from hydra_fleet.health.clock import SystemClock
from hydra_fleet.health.config import (
    AlertmanagerSink,
    Alerts,
    NtfySink,
    RedisSink,
    Sinks,
    WebhookSink,
)
from hydra_fleet.health.store import AsyncStore, Store
from tests.health.receivers import Receiver, parse_time
from tests.health.servers import http_server
from tests.net import free_port


async def wait_for(predicate: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def outbox(tmp_path: Path, sinks: Sinks, **kw: float) -> AsyncIterator[Outbox]:
    store = AsyncStore(tmp_path / "health.sqlite3")
    config = Alerts(sinks=sinks, retry_base=kw.get("retry_base", 0.05), retry_max=0.2)
    clock = SystemClock()
    async with aiohttp.ClientSession() as session:
        box = Outbox(store, clock, config, make_sinks(config, session, clock))
        box.start()
        try:
            yield box
        finally:
            await box.stop()
            store.close()


LABELS = {"alertname": "HydraCheckDown", "check": "llm", "host": "h", "severity": "warning"}
NOTES = {"summary": "check llm on h is down", "description": "llm (http): HTTP 500"}


async def test_webhook_down_then_up_gets_every_alert_in_order(tmp_path: Path) -> None:
    port = free_port()
    sinks = Sinks(webhook=WebhookSink(url=f"http://127.0.0.1:{port}/hook"))
    receiver = Receiver()
    async with outbox(tmp_path, sinks) as box:
        for n in range(5):
            await box.fire({**LABELS, "check": f"c{n}"}, NOTES)
        await box.resolve({**LABELS, "check": "c0"}, NOTES)
        await asyncio.sleep(0.5)  # the sink is down: deliveries fail and back off
        rows = await box.store.call(Store.listing)
        assert all(r["delivered_at"] is None for r in rows)
        assert max(r["attempts"] for r in rows) >= 1
        async with http_server(receiver.app(), port):
            await wait_for(lambda: len(receiver.webhook) == 6)
    got = [(a["labels"]["check"], a["status"]) for a in receiver.webhook]
    assert got == [(f"c{n}", "firing") for n in range(5)] + [("c0", "resolved")]
    assert receiver.webhook[-1]["endsAt"] is not None


async def test_firing_twice_is_one_alert_and_resolve_needs_firing(tmp_path: Path) -> None:
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        sinks = Sinks(webhook=WebhookSink(url=f"http://127.0.0.1:{port}/hook"))
        async with outbox(tmp_path, sinks) as box:
            assert await box.resolve(LABELS, NOTES) is None
            assert await box.fire(LABELS, NOTES) is not None
            assert await box.fire(LABELS, NOTES) is None
            await wait_for(lambda: len(receiver.webhook) == 1)


async def test_alertmanager_v2_payload_firing_refresh_and_resolved(tmp_path: Path) -> None:
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        sinks = Sinks(
            alertmanager=AlertmanagerSink(url=f"http://127.0.0.1:{port}", resend_interval=0.3)
        )
        async with outbox(tmp_path, sinks) as box:
            await box.fire(LABELS, NOTES)
            # delivered once, then re-posted while it fires
            await wait_for(lambda: len(receiver.alertmanager) >= 3)
            await box.resolve(LABELS, NOTES)
            await wait_for(
                lambda: parse_time(receiver.alertmanager[-1]["endsAt"]).timestamp() < time.time()
            )
            await asyncio.sleep(0.8)  # two more refresh intervals: nothing firing is re-posted
    first = receiver.alertmanager[0]
    assert first["labels"] == LABELS
    assert first["annotations"] == NOTES
    now = time.time()
    ends = parse_time(first["endsAt"]).timestamp()
    assert now < ends + 0.5 < now + 5  # firing: expires in the future, a few resends ahead
    resolved = [a for a in receiver.alertmanager if parse_time(a["endsAt"]).timestamp() < now]
    assert resolved, "the resolution was not posted with endsAt in the past"
    assert resolved[-1]["startsAt"] == first["startsAt"]
    # after the resolution no more refreshes of a firing alert
    assert receiver.alertmanager[-1]["endsAt"] == resolved[-1]["endsAt"]


async def test_ntfy_gets_title_priority_and_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tk_secret\n")
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        sinks = Sinks(
            ntfy=NtfySink(
                url=f"http://127.0.0.1:{port}",
                topic="hydra",
                token_file=Secret(token, "tk_secret"),
            )
        )
        async with outbox(tmp_path, sinks) as box:
            await box.fire({**LABELS, "severity": "critical"}, NOTES)
            await wait_for(lambda: len(receiver.ntfy) == 1)
    topic, headers, body = receiver.ntfy[0]
    assert topic == "hydra"
    assert headers["Title"] == "[FIRING] HydraCheckDown llm on h"
    assert headers["Priority"] == "5"
    assert headers["Authorization"] == "Bearer tk_secret"
    assert body == NOTES["description"]


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "pw",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


async def test_redis_stream_sink_xadds_each_alert(tmp_path: Path) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415

    password = tmp_path / "redis-pw"
    password.write_text("pw")
    with redis_server(tmp_path) as port:
        sinks = Sinks(
            redis=RedisSink(
                url=f"redis://127.0.0.1:{port}/0",
                stream="hydra:alerts",
                password_file=Secret(password, "pw"),
            )
        )
        async with outbox(tmp_path, sinks) as box:
            await box.fire(LABELS, NOTES)
            await box.resolve(LABELS, NOTES)
            client = aioredis.Redis(host="127.0.0.1", port=port, password=password.read_text())
            try:
                entries: list[tuple[bytes, dict[bytes, bytes]]] = []

                async def poll() -> None:
                    entries[:] = await client.xrange("hydra:alerts")  # type: ignore[assignment]

                deadline = time.monotonic() + 10
                while len(entries) < 2 and time.monotonic() < deadline:
                    await poll()
                    await asyncio.sleep(0.05)
            finally:
                await client.aclose()
    statuses = [fields[b"status"] for _, fields in entries]
    assert statuses == [b"firing", b"resolved"]
    import json  # noqa: PLC0415

    payload = json.loads(entries[0][1][b"payload"])
    assert payload["labels"] == LABELS


async def test_wrong_redis_password_keeps_the_alert_pending(tmp_path: Path) -> None:
    with redis_server(tmp_path) as port:
        sinks = Sinks(redis=RedisSink(url=f"redis://127.0.0.1:{port}/0"))
        async with outbox(tmp_path, sinks) as box:
            await box.fire(LABELS, NOTES)
            await asyncio.sleep(0.4)
            rows = await box.store.call(Store.listing)
    assert rows[0]["delivered_at"] is None
    assert "redis" in rows[0]["last_error"].lower() or "auth" in rows[0]["last_error"].lower()


async def test_sink_down_for_an_hour_gets_everything_without_being_hammered(
    tmp_path: Path,
) -> None:
    """An hour of fake time: retries back off to `retryMax`, then the sink returns."""
    from hydra_fleet.health.clock import FakeClock  # noqa: PLC0415

    port = free_port()
    clock = FakeClock()
    config = Alerts(
        sinks=Sinks(webhook=WebhookSink(url=f"http://127.0.0.1:{port}/hook")),
        retry_base=1.0,
        retry_max=300.0,
    )
    store = AsyncStore(tmp_path / "health.sqlite3")
    receiver = Receiver()
    async with aiohttp.ClientSession() as session:
        box = Outbox(store, clock, config, make_sinks(config, session, clock))
        box.start()
        try:
            for n in range(3):
                await box.fire({**LABELS, "check": f"c{n}"}, NOTES)
            for _ in range(360):  # one hour in 10 s steps
                clock.advance(10)
                await asyncio.sleep(0.005)
            rows = await store.call(Store.listing)
            attempts = max(r["attempts"] for r in rows)
            async with http_server(receiver.app(), port):
                for _ in range(40):  # at most retryMax (300 s) of fake time
                    clock.advance(10)
                    await asyncio.sleep(0.02)
                    if len(receiver.webhook) == 3:
                        break
        finally:
            await box.stop()
            store.close()
    # ~10 doublings up to 300 s, then ~one try per 150-300 s: far from a retry storm
    assert 5 <= attempts <= 40, attempts
    assert sorted(a["labels"]["check"] for a in receiver.webhook) == ["c0", "c1", "c2"]
