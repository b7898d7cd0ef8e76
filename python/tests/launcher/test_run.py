"""`run` against stand-in engines started as real subprocesses, with a real NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.core.sdnotify import Notifier
from hydra_fleet.launcher import supervisor
from tests.launcher.conftest import RTX4090, instance
from tests.launcher.fakes import FakeGpus, device

STAND_IN = str(Path(__file__).with_name("stand_in.py"))
LAUNCH = [
    sys.executable,
    "-c",
    "from hydra_fleet.launcher.cli import main; raise SystemExit(main())",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def collect(self, until: str, timeout: float) -> list[tuple[float, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.time(), data))
            if until in data:
                break
        return self.messages


@pytest.fixture(name="notify")
def fixture_notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.sock.close()


def launch(tmp_path: Path, notify: NotifySocket, **keys: Any) -> subprocess.Popen[bytes]:
    config = tmp_path / "instance.json"
    config.write_text(
        json.dumps(
            {"name": "llm", "listenAddress": "127.0.0.1", "workDir": str(tmp_path / "w"), **keys}
        )
    )
    env = {**os.environ, "NOTIFY_SOCKET": notify.path}
    return subprocess.Popen([*LAUNCH, "run", "--config", str(config)], env=env)


def stand_in(mode: str, port: int, delay: float, marker: Path) -> list[str]:
    return [sys.executable, STAND_IN, mode, str(port), str(delay), str(marker)]


def stand_in_executable(tmp_path: Path, mode: str, port: int, delay: float, marker: Path) -> Path:
    """An engine binary (as `executable` points at) that runs the stand-in in `mode`."""
    path = tmp_path / mode
    path.write_text(f"#!/bin/sh\nexec {shlex.join(stand_in(mode, port, delay, marker))}\n")
    path.chmod(0o755)
    return path


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


FAST = {
    "interval": 0.2,
    "probeTimeout": 2,
    "stopTimeout": 5,
    "timeout": 60,
    "liveness": {"interval": 0.5, "timeout": 2},
}


@pytest.mark.parametrize("mode", ["llama-cpp", "tabbyapi", "vllm"])
def test_ready_only_after_the_engine_is(tmp_path: Path, notify: NotifySocket, mode: str) -> None:
    """READY=1 arrives after the stand-in became ready, never before; loading sends STATUS."""
    port, marker = free_port(), tmp_path / "ready"
    probe = {"probePath": "/health"}
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=stand_in(mode, port, 1.5, marker),
        readiness=FAST,
        **probe,
    )
    try:
        messages = notify.collect("READY=1", 30)
        ready_at = next(t for t, m in messages if "READY=1" in m)
        assert marker.exists()
        assert ready_at >= float(marker.read_text())
        loading = [m for _, m in messages if "STATUS=loading" in m]
        assert loading, messages
        assert all("EXTEND_TIMEOUT_USEC=" in m for m in loading)
        child_env = json.loads(Path(f"{marker}.env").read_text())
        assert child_env["NOTIFY_SOCKET"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_child_crash_is_a_nonzero_exit(tmp_path: Path, notify: NotifySocket) -> None:
    """The engine dies after it was ready: the launcher exits non-zero (its exit code)."""
    port, marker = free_port(), tmp_path / "ready"
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=stand_in("crash", port, 2.0, marker),
        readiness=FAST,
    )
    assert proc.wait(30) == 3
    assert any("READY=1" in m for _, m in notify.collect("engine exited", 2))


def test_crash_while_loading(tmp_path: Path, notify: NotifySocket) -> None:
    """The engine dies before it is ready: non-zero, and READY=1 is never sent."""
    port = free_port()
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=[sys.executable, "-c", "raise SystemExit(5)"],
        readiness=FAST,
    )
    assert proc.wait(30) == 5
    assert not any("READY=1" in m for _, m in notify.collect("exited", 2))


def test_sigterm_stops_the_whole_group(tmp_path: Path, notify: NotifySocket) -> None:
    """SIGTERM: the engine and its grandchild are gone, even one that ignores SIGTERM."""
    port, marker = free_port(), tmp_path / "ready"
    fast = {**FAST, "stopTimeout": 1}
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=stand_in("ignore-term", port, 0.2, marker),
        probePath="/health",
        readiness=fast,
    )
    notify.collect("READY=1", 30)
    grandchild = int(Path(f"{marker}.grandchild").read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert any("STOPPING=1" in m for _, m in notify.collect("STOPPING=1", 5))
    time.sleep(0.2)
    assert gone(grandchild)


def test_busy_port_is_refused_before_starting(tmp_path: Path, notify: NotifySocket) -> None:
    """A busy port (TabbyAPI would silently take port+1) is refused with 75; nothing starts."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        marker = tmp_path / "ready"
        proc = launch(
            tmp_path,
            notify,
            engine="command",
            port=port,
            command=stand_in("tabbyapi", port, 0, marker),
            readiness=FAST,
        )
        assert proc.wait(30) == 75
    assert not Path(f"{marker}.env").exists()


def test_not_ready_in_time(tmp_path: Path, notify: NotifySocket) -> None:
    """Still 503 after readiness.timeout: non-zero and the group is stopped."""
    port, marker = free_port(), tmp_path / "ready"
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        probePath="/health",
        command=stand_in("llama-cpp", port, 60, marker),
        readiness={**FAST, "timeout": 1.5},
    )
    assert proc.wait(30) == 1


async def test_ollama_ready_means_model_loaded(tmp_path: Path, notify: NotifySocket) -> None:
    """Ollama answers at once; READY=1 only once the model is loaded (stand-in: 1 s load)."""
    port, marker = free_port(), tmp_path / "ready"
    ollama = stand_in_executable(tmp_path, "ollama", port, 1.0, marker)
    inst = instance(
        engine="ollama",
        port=port,
        model="llama3",
        contextLength=4096,
        executable=str(ollama),
        workDir=str(tmp_path / "w"),
        readiness=FAST,
    )
    sup = supervisor.Supervisor(inst, None, Notifier(notify.path), dict(os.environ))

    async def stop_after_ready() -> int:
        task = asyncio.create_task(sup.run())
        while not any("READY=1" in m for _, m in notify.messages):
            await asyncio.to_thread(notify.collect, "READY=1", 0.2)
            assert not task.done(), task
        sup.stop.set()
        return await task

    assert await stop_after_ready() == 0
    ready_at = next(t for t, m in notify.messages if "READY=1" in m)
    assert ready_at >= float(marker.read_text())


async def test_ollama_unknown_model_is_78(tmp_path: Path, notify: NotifySocket) -> None:
    """A model Ollama does not have will not appear by waiting: exit 78."""
    port, marker = free_port(), tmp_path / "ready"
    ollama = stand_in_executable(tmp_path, "ollama", port, 0, marker)
    inst = instance(
        engine="ollama",
        port=port,
        model="missing",
        contextLength=4096,
        executable=str(ollama),
        workDir=str(tmp_path / "w"),
        readiness=FAST,
    )
    assert await supervisor.run(inst, None, Notifier(notify.path)) == 78


def test_cpu_fallback_is_a_failure(tmp_path: Path, notify: NotifySocket) -> None:
    """Ready, but NVML shows no memory held on the pinned GPU: 75, and no READY=1."""
    port, marker = free_port(), tmp_path / "ready"
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], held={1: 0})
    inst = instance(
        engine="command",
        port=port,
        command=stand_in("tabbyapi", port, 0, marker),
        gpus=[RTX4090],
        readiness=FAST,
    )
    assert asyncio.run(supervisor.run(inst, gpus, Notifier(notify.path))) == 75
    assert not any("READY=1" in m for _, m in notify.collect("READY=1", 0.5))
    assert gpus.memory_queries
    assert gpus.memory_queries[0]
    env = json.loads(Path(f"{marker}.env").read_text())
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-4090"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


async def test_on_gpu_is_ready(tmp_path: Path, notify: NotifySocket) -> None:
    """The engine's pids hold memory on the pinned GPU: READY=1."""
    port, marker = free_port(), tmp_path / "ready"
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], held={1: 8 << 30})
    inst = instance(
        engine="command",
        port=port,
        command=stand_in("crash", port, 1.0, marker),
        gpus=[RTX4090],
        readiness=FAST,
    )
    assert await supervisor.run(inst, gpus, Notifier(notify.path)) == 3
    assert any("READY=1" in m for _, m in notify.collect("READY=1", 1))


def test_missing_executable_is_78(tmp_path: Path, notify: NotifySocket) -> None:
    """An engine binary that does not exist: one line naming it, exit 78."""
    proc = launch(
        tmp_path,
        notify,
        engine="llama-cpp",
        port=free_port(),
        model="m.gguf",
        contextLength=512,
        cpuOnly=True,
        executable=str(tmp_path / "nope"),
    )
    assert proc.wait(30) == 78


def test_unhealthy_after_ready_is_a_nonzero_exit(tmp_path: Path, notify: NotifySocket) -> None:
    """Probes keep running after READY=1: `failures` failed probes in a row end the run (1)."""
    port, marker = free_port(), tmp_path / "ready"
    command = stand_in("degrade", port, 1.0, marker)
    readiness = {**FAST, "failures": 3}
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=command,
        probePath="/health",
        readiness=readiness,
    )
    assert proc.wait(30) == 1
    messages = [m for _, m in notify.collect("unhealthy", 2)]
    assert any("READY=1" in m for m in messages)
    assert any("STATUS=unhealthy: GET /health 500" in m for m in messages)


def test_ollama_model_in_system_memory_is_a_failure(tmp_path: Path, notify: NotifySocket) -> None:
    """Ollama loaded the model but /api/ps shows it off the GPU: 75, no READY=1."""
    port, marker = free_port(), tmp_path / "ready"
    ollama = stand_in_executable(tmp_path, "ollama-cpu", port, 0.2, marker)
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], held={1: 8 << 30})
    inst = instance(
        engine="ollama",
        port=port,
        model="llama3",
        contextLength=4096,
        executable=str(ollama),
        workDir=str(tmp_path / "w"),
        gpus=[RTX4090],
        readiness=FAST,
    )
    assert asyncio.run(supervisor.run(inst, gpus, Notifier(notify.path))) == 75
    assert not any("READY=1" in m for _, m in notify.collect("READY=1", 0.5))


def test_stop_waits_for_the_gpu_memory_release(tmp_path: Path, notify: NotifySocket) -> None:
    """After a stop the launcher returns only once the engine's GPU memory is released."""
    port, marker = free_port(), tmp_path / "ready"
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], held={1: 8 << 30})
    command = stand_in("tabbyapi", port, 0.2, marker)
    inst = instance(engine="command", port=port, command=command, gpus=[RTX4090], readiness=FAST)
    sup = supervisor.Supervisor(inst, gpus, Notifier(notify.path), dict(os.environ))

    async def run_then_stop() -> int:
        task = asyncio.create_task(sup.run())
        while not any("READY=1" in m for _, m in notify.messages):
            await asyncio.to_thread(notify.collect, "READY=1", 0.2)
            assert not task.done()
        sup.stop.set()
        return await task

    assert asyncio.run(run_then_stop()) == 0
    assert gpus.answers[0] == {1: 8 << 30}  # placement: held while running
    assert gpus.answers[-1] == {1: 0}  # released before run() returned
    assert all(gone(pid) for pid in sup.seen_pids)
