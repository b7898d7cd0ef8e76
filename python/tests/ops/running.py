"""A small live host for the operator's-view tests: exporter + agent as real subprocesses.

The exporter serves three synthetic GPUs (one fallen off the bus, two holding VRAM for
engine units); the agent checks it, one engine that answers (`llm`) and one that does not
(`big`), queues its alerts for a webhook nobody listens on, and lists itself and a host
that does not answer in its fleet.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.installed import command_argv
from tests.net import free_port

GIB = 1024**3


def get(url: str, accept: str = "*/*") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def get_json(url: str) -> Any:
    return json.loads(get(url, "application/json")[2])


@dataclass
class Host:
    agent: str
    exporter: str
    silent: str
    state_dir: Path
    config: Path
    logs: Path


def _exporter_config(path: Path) -> Path:
    devices = [
        {
            "name": "Demo RTX 4090",
            "vendor": "nvidia",
            "memoryBytes": 24 * GIB,
            "processes": [
                {
                    "pid": 4242,
                    "comm": "python3",
                    "unit": "hydra-inference-llm.service",
                    "memoryBytes": 14 * GIB,
                },
                {"pid": 4243, "comm": "comfyui", "unit": "comfyui.service", "memoryBytes": 2 * GIB},
            ],
        },
        {
            "name": "Demo Radeon Pro W7500",
            "vendor": "amd",
            "memoryBytes": 8 * GIB,
            "processes": [
                {
                    "pid": 5151,
                    "comm": "llama-server",
                    "unit": "hydra-inference-big.service",
                    "memoryBytes": 3 * GIB,
                },
            ],
        },
        {"name": "Demo RTX 5090", "vendor": "nvidia", "memoryBytes": 32 * GIB, "lost": True},
    ]
    path.write_text(
        json.dumps(
            {
                "backends": ["synthetic"],
                "expectedDevices": {"synthetic": 3},
                "synthetic": {"devices": devices},
            }
        )
    )
    return path


def _instances(path: Path, llm_port: int, big_port: int) -> Path:
    gpu0 = {"vendor": "nvidia", "model": "RTX 4090", "vramGiB": 24, "arch": "sm_89", "index": 0}
    gpu1 = {
        "vendor": "amd",
        "model": "Radeon Pro W7500",
        "vramGiB": 8,
        "arch": "gfx1102",
        "index": 1,
    }
    path.write_text(
        json.dumps(
            {
                "llm": {
                    "name": "llm",
                    "engine": "llama-cpp",
                    "model": "/models/qwen3-8b.gguf",
                    "contextLength": 8192,
                    "listenAddress": "127.0.0.1",
                    "port": llm_port,
                    "gpus": [gpu0],
                },
                "big": {
                    "name": "big",
                    "engine": "llama-cpp",
                    "model": "/models/mistral.gguf",
                    "contextLength": 32768,
                    "listenAddress": "127.0.0.1",
                    "port": big_port,
                    "gpus": [gpu1],
                },
            }
        )
    )
    return path


def _fast(check: dict[str, Any]) -> dict[str, Any]:
    return {
        "interval": 1.0,
        "timeout": 0.9,
        "connectTimeout": 0.5,
        "failureThreshold": 1,
        "successThreshold": 1,
        **check,
    }


@contextmanager
def live_host(root: Path) -> Iterator[Host]:
    """Start the exporter and the agent; wait until the agent has a verdict on every check."""
    root.mkdir(parents=True, exist_ok=True)
    exporter_port, agent_port, silent_port = free_port(), free_port(), free_port()
    llm_port, big_port, dead_sink = free_port(), free_port(), free_port()
    exporter = f"http://127.0.0.1:{exporter_port}"
    agent = f"http://127.0.0.1:{agent_port}"
    silent = f"http://127.0.0.1:{silent_port}"
    config = root / "health.json"
    config.write_text(
        json.dumps(
            {
                "listenAddress": "127.0.0.1",
                "port": agent_port,
                "stateDir": str(root / "state"),
                "hostName": "ops-test",
                "instancesFile": str(_instances(root / "instances.json", llm_port, big_port)),
                "fleet": [{"name": "ops-test", "url": agent}, {"name": "silent", "url": silent}],
                "alerts": {
                    "sinks": {"webhook": {"url": f"http://127.0.0.1:{dead_sink}/hook"}},
                    "retryBase": 30,
                },
                "checks": {
                    "exporter": _fast(
                        # steady under a loaded CI machine: one slow answer is not an outage
                        {"type": "http", "url": f"{exporter}/healthz", "failureThreshold": 5}
                    ),
                    "gpus": _fast(
                        {"type": "gpu", "url": f"{exporter}/metrics", "dependsOn": ["exporter"]}
                    ),
                    "inference-llm": _fast(
                        {
                            "type": "tcp",
                            "host": "127.0.0.1",
                            "port": llm_port,
                            "failureThreshold": 5,
                        }
                    ),
                    "inference-big": _fast(
                        {
                            "type": "tcp",
                            "host": "127.0.0.1",
                            "port": big_port,
                            "remediate": {"action": "command", "command": ["true"]},
                        }
                    ),
                },
            }
        )
    )
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    engine = socket.create_server(("127.0.0.1", llm_port))  # `llm` accepts connections
    threading.Thread(target=_accept_forever, args=(engine,), daemon=True).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (logs / "exporter.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        *command_argv("hydra-gpu-exporter"),
                        "--config",
                        str(_exporter_config(root / "exporter.json")),
                        "--listen",
                        f"127.0.0.1:{exporter_port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        with (logs / "agent.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*command_argv("hydra-health"), "run", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_for_verdicts(agent, procs, logs)
        yield Host(agent, exporter, silent, root / "state", config, logs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        engine.close()


def _accept_forever(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return  # closed at the end of the test
        conn.close()


def _wait_for_verdicts(agent: str, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 60
    want = {"exporter": "up", "gpus": "down", "inference-llm": "up", "inference-big": "down"}
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                tails = {p.name: p.read_text()[-2000:] for p in logs.iterdir()}
                raise AssertionError(f"a process exited with {proc.returncode}: {tails}")
        try:
            status = get_json(agent + "/status")
            seen = {n: c["state"] for n, c in status["checks"].items()}
            waiting = sum(s["waiting"] for s in status["outbox"].values())
            remediated = (status["checks"]["inference-big"]["remediation"] or {}).get(
                "restartsLeft", 3
            ) < 3
            if seen == want and waiting > 0 and remediated and status["exporter"]["ok"]:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"agent never reached {want}; last seen {seen}")
