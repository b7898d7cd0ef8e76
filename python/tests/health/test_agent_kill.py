"""SIGKILL the real agent process in the middle of delivering; a restart delivers everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.health.receivers import Receiver
from tests.health.servers import http_server
from tests.net import free_port

CHECKS = 5


async def wait_for(predicate: Callable[[], object], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def queued(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hydra_fleet.health.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HYDRA_LOG_FORMAT": "logfmt"},
    )


async def test_sigkill_mid_delivery_then_restart_delivers_every_alert(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.hold = asyncio.Event()  # the first deliveries hang: the agent is mid-delivery
    async with http_server(receiver.app()) as hook_port:
        dead = free_port()
        check = {
            "type": "tcp",
            "host": "127.0.0.1",
            "port": dead,
            "interval": 0.2,
            "timeout": 0.2,
            "connectTimeout": 0.2,
            "failureThreshold": 1,
        }
        config = tmp_path / "health.json"
        config.write_text(
            json.dumps(
                {
                    "port": free_port(),
                    "stateDir": str(tmp_path / "state"),
                    "checks": {f"c{n}": check for n in range(CHECKS)},
                    "alerts": {
                        "retryBase": 0.1,
                        "retryMax": 0.5,
                        "sendTimeout": 30,
                        "sinks": {"webhook": {"url": f"http://127.0.0.1:{hook_port}/hook"}},
                    },
                }
            )
        )
        db = tmp_path / "state" / "health.sqlite3"
        agent = start_agent(config)
        try:
            await wait_for(lambda: queued(db) == CHECKS and receiver.requests >= 1)
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            assert receiver.webhook == []  # nothing was acknowledged before the kill
            receiver.hold.set()
            receiver.hold = None
            agent = start_agent(config)
            await wait_for(lambda: len(receiver.webhook_keys()) == CHECKS)
            await asyncio.sleep(0.5)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=20)
    checks = sorted(a["labels"]["check"] for a in receiver.webhook if a["status"] == "firing")
    assert sorted(set(checks)) == [f"c{n}" for n in range(CHECKS)]
    assert queued(db) == CHECKS  # the restarted agent raised no duplicates
    assert agent.returncode == 0
