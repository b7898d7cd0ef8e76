"""The state directory on a real, tiny tmpfs that fills up while services fail.

Nothing raised while the disk is full is lost or sent twice, no restart runs that the
budget could not record, /healthz says 503 and the metrics say why; once space is back,
every alert is delivered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from pytest_aiohttp import AiohttpClient

from hydra_fleet.health.app import make_app
from tests.health.receivers import Receiver
from tests.health.servers import http_server
from tests.health.test_agent import config, running, unit_check, wait_for

UNITS = [f"svc{i}.service" for i in range(4)]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _write_forever(out: BinaryIO) -> None:
    chunk = b"\0" * 4096
    while True:
        out.write(chunk)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        with pytest.raises(OSError, match="No space left") as full:
            _write_forever(out)
        assert full.value.errno == errno.ENOSPC
    return filler


def restarts(log: Path) -> Counter[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.startswith("restart "))


async def test_full_disk_loses_nothing_sends_nothing_twice_and_acts_within_budget(
    tmp_path: Path,
    fake_systemctl: tuple[Path, Path, Path],
    aiohttp_client: AiohttpClient,
) -> None:
    systemctl, units, log = fake_systemctl
    for unit in UNITS:
        (units / unit).write_text("active\n")
        (units / f"{unit}.after-restart").write_text("failed\n")  # a restart does not help
    receiver = Receiver()
    with tmpfs(tmp_path / "state", "512k") as state:
        async with http_server(receiver.app()) as hook:
            cfg = config(
                tmp_path,
                {
                    "systemctl": str(systemctl),
                    "checks": {unit: unit_check(unit) for unit in UNITS},
                    "budget": {"maxPerHour": 1, "backoffBase": 0, "backoffMax": 0},
                    "alerts": {
                        "sinks": {"webhook": {"url": f"http://127.0.0.1:{hook}/hook"}},
                        "retryBase": 0.05,
                        "retryMax": 0.5,
                    },
                },
            )
            assert cfg.state_dir == state
            async with running(cfg) as agent:
                client = await aiohttp_client(make_app(agent))
                await wait_for(lambda: all(s.effective == "up" for s in agent.states.values()))
                filler = fill(state)
                for unit in UNITS:
                    (units / unit).write_text("failed\n")

                async def healthz() -> tuple[int, str]:
                    response = await client.get("/healthz")
                    return response.status, await response.text()

                assert agent.outbox is not None
                outbox = agent.outbox
                await wait_for(lambda: len(outbox.unsaved) == len(UNITS))
                status, text = await healthz()
                assert status == 503, text
                assert "store not writable" in text
                assert all(s.effective == "down" for s in agent.states.values())
                metrics = await (await client.get("/metrics")).text()
                assert "hydra_health_store_writable 0.0" in metrics
                assert "hydra_health_outbox_held 4.0" in metrics
                # the transitions are held, not lost, and nothing was restarted unrecorded
                await asyncio.sleep(1.0)
                assert receiver.webhook == []
                assert restarts(log) == Counter()

                filler.unlink()
                want = set(UNITS)
                await wait_for(
                    lambda: {item["labels"]["check"] for item in receiver.webhook} >= want,
                    within=30,
                )
                await wait_for(lambda: restarts(log) == Counter(dict.fromkeys(UNITS, 1)))
                status, text = await healthz()
                assert status == 200, text
                await asyncio.sleep(1.0)

    sends = Counter(item["dedupKey"] for item in receiver.webhook)
    assert sends, "nothing was delivered"
    assert max(sends.values()) == 1, sends
    down = [item for item in receiver.webhook if item["labels"]["alertname"] == "HydraCheckDown"]
    assert sorted(item["labels"]["check"] for item in down) == sorted(UNITS)
    # one restart each: the budget of 1 per hour, counted although the disk was full before
    assert restarts(log) == Counter(dict.fromkeys(UNITS, 1))
