"""A hostile LAN on loopback: the exporter and the agent under a real `ulimit -n`, flooded
with idle and slowloris connections, scraped all the while.

Used by `tests/core/test_flood.py` (asserting that every scrape is answered and no check
changes state) and by `bench/flood.py` (printing the latency figures).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.installed import command_argv
from tests.net import free_port

NOFILE = 1024  # systemd's default soft limit, the one the issue reproduced with


def limit_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def raise_own_nofile(need: int) -> bool:
    """Raise this process's descriptor limit to hold `need` client sockets; False if the
    hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        return False
    if soft == resource.RLIM_INFINITY or soft >= need:
        return True
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else need, hard)
    )
    return True


def get(url: str, timeout: float = 10.0) -> tuple[int, str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        body = response.read().decode()
        return response.status, body, time.monotonic() - started


def wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            get(url, timeout=2)
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


@dataclass
class Services:
    exporter: int
    agent: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(get(f"http://127.0.0.1:{self.agent}/status")[1])
        return result


@contextlib.contextmanager
def services(tmp: Path) -> Iterator[Services]:
    """The exporter (synthetic backend) and the agent (an HTTP check of the exporter's
    /metrics every second), each limited to 1024 descriptors, as a default unit is."""
    exporter_port, agent_port = free_port(), free_port()
    exporter_cfg = tmp / "exporter.json"
    exporter_cfg.write_text(
        json.dumps(
            {
                "backends": ["synthetic"],
                "synthetic": {"devices": [{"name": "demo", "memoryBytes": 24 * 1024**3}]},
            }
        )
    )
    agent_cfg = tmp / "health.json"
    agent_cfg.write_text(
        json.dumps(
            {
                "stateDir": str(tmp / "state"),
                "port": agent_port,
                "checks": {
                    "exporter": {
                        "type": "http",
                        "url": f"http://127.0.0.1:{exporter_port}/metrics",
                        "interval": 1.0,
                        "timeout": 0.9,
                        "connectTimeout": 0.5,
                        "failureThreshold": 1,
                        "successThreshold": 1,
                    }
                },
            }
        )
    )
    env = {**os.environ, "HYDRA_LOG_FORMAT": "logfmt"}
    found = Services(exporter_port, agent_port)
    with (
        (tmp / "exporter.log").open("wb") as exporter_log,
        (tmp / "agent.log").open("wb") as agent_log,
    ):
        found.procs.append(
            subprocess.Popen(
                [
                    *command_argv("hydra-gpu-exporter"),
                    "--config",
                    str(exporter_cfg),
                    "--listen",
                    f"127.0.0.1:{exporter_port}",
                ],
                stdout=exporter_log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_nofile,  # noqa: PLW1509 - no threads in the child yet
                env=env,
            )
        )
        found.procs.append(
            subprocess.Popen(
                [*command_argv("hydra-health"), "run", "--config", str(agent_cfg)],
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_nofile,  # noqa: PLW1509 - no threads in the child yet
                env=env,
            )
        )
        try:
            wait_http(f"http://127.0.0.1:{exporter_port}/metrics", found.procs[0])
            wait_http(f"http://127.0.0.1:{agent_port}/healthz", found.procs[1])
            yield found
        finally:
            for proc in found.procs:
                proc.terminate()
            for proc in found.procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class Flood:
    """Idle and slowloris connections held open against some ports."""

    idle: list[socket.socket] = field(default_factory=list)
    slow: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.stop.set()
        for sock in self.idle + self.slow:
            sock.close()


def _connect(port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


@contextlib.contextmanager
def flood(ports: list[int], idle: int, slow: int) -> Iterator[Flood]:
    """Open `idle` silent and `slow` slowloris connections to each port; the slow ones
    send one more header byte every half second and never finish."""
    state = Flood()
    for port in ports:
        for _ in range(idle):
            sock = _connect(port)
            if sock is not None:
                state.idle.append(sock)
        for _ in range(slow):
            sock = _connect(port)
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            state.slow.append(sock)

    def trickle() -> None:
        while not state.stop.wait(0.5):
            for sock in state.slow:
                with contextlib.suppress(OSError):
                    sock.send(b"X")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.close()
        thread.join(timeout=5)


def scrape(url: str, count: int) -> dict[str, float]:
    """`count` scrapes on fresh connections; the answered count and the latencies (ms)."""
    latencies = []
    answered = 0
    for _ in range(count):
        try:
            status, _, took = get(url)
        except OSError:
            continue
        if status == 200:
            answered += 1
            latencies.append(took * 1000)
    latencies.sort()
    return {
        "answered": answered,
        "asked": count,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
    }
