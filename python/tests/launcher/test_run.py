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
from tests.net import free_port

STAND_IN = str(Path(__file__).with_name("stand_in.py"))
LAUNCH = [
    sys.executable,
    "-c",
    "from hydra_fleet.launcher.cli import main; raise SystemExit(main())",
]


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


def fake_llama_server(tmp_path: Path, help_text: str, then: str) -> Path:
    """A llama-server binary: `--help` prints `help_text`; otherwise it records its argv in
    `argv.txt` and runs `then` (a shell command line)."""
    path = tmp_path / "llama-server"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --help ]; then printf %s {shlex.quote(help_text)}; exit 0; fi\n'
        f'echo "$@" > {shlex.quote(str(tmp_path / "argv.txt"))}\n'
        f"{then}\n"
    )
    path.chmod(0o755)
    return path


def test_engine_refusing_its_arguments_is_78_with_its_line(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """An engine that exits 1 at argument parsing is a configuration error, not a restart."""
    line = "error: invalid argument: --fit"
    fake = fake_llama_server(tmp_path, "--fit [on|off]", f"echo {shlex.quote(line)} >&2; exit 1")
    proc = subprocess.Popen(
        [*LAUNCH, "run", "--config", str(llama_config(tmp_path, fake))],
        env={**os.environ, "NOTIFY_SOCKET": notify.path},
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert f"llama-cpp refused to start (exit 1): {line}" in err
    assert line in err.splitlines()  # the engine's own output still reaches the journal
    statuses = [m for _, m in notify.collect("refused", 2)]
    assert any("STATUS=refused (78)" in m and line in m for m in statuses)


def llama_config(tmp_path: Path, executable: Path, **keys: Any) -> Path:
    config = tmp_path / "instance.json"
    config.write_text(
        json.dumps(
            {
                "name": "llm",
                "engine": "llama-cpp",
                "port": keys.pop("port", free_port()),
                "model": "m.gguf",
                "contextLength": 512,
                "cpuOnly": True,
                "executable": str(executable),
                "workDir": str(tmp_path / "w"),
                "readiness": FAST,
                **keys,
            }
        )
    )
    return config


def test_old_llama_server_gets_no_fit_flag(tmp_path: Path, notify: NotifySocket) -> None:
    """The binary's --help decides: a build without --fit is started without it."""
    port, marker = free_port(), tmp_path / "ready"
    then = f"exec {shlex.join(stand_in('llama-cpp', port, 0.5, marker))}"
    fake = fake_llama_server(tmp_path, "--ctx-size N\n--flash-attn", then)
    proc = subprocess.Popen(
        [*LAUNCH, "run", "--config", str(llama_config(tmp_path, fake, port=port))],
        env={**os.environ, "NOTIFY_SOCKET": notify.path},
    )
    try:
        assert any("READY=1" in m for _, m in notify.collect("READY=1", 30))
        argv = (tmp_path / "argv.txt").read_text().split()
        assert "--fit" not in argv
        assert argv[argv.index("--n-gpu-layers") + 1] == "0"
        home = tmp_path / "w"
        child_env = json.loads(Path(f"{marker}.env").read_text())
        assert child_env["CUDA_VISIBLE_DEVICES"] == "-1"
        assert home.is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_reload_after_ready_is_loading_not_dead(tmp_path: Path, notify: NotifySocket) -> None:
    """llama-server answers 503 "Loading model" again after READY=1 (a reload): the
    launcher says so and keeps it, though one failed probe would otherwise end the run."""
    port, marker = free_port(), tmp_path / "ready"
    proc = launch(
        tmp_path,
        notify,
        engine="command",
        port=port,
        command=stand_in("reload", port, 1.0, marker),
        probePath="/health",
        readiness={**FAST, "failures": 1},
    )
    try:
        messages = [m for _, m in notify.collect("STATUS=reloading", 30)]
        assert any("READY=1" in m for m in messages)
        assert any("STATUS=reloading: GET /health 503" in m for m in messages), messages
        messages = [m for _, m in notify.collect("STATUS=ready", 30)]
        assert any("STATUS=ready" in m for m in messages), messages
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_ollama_busy_api_ps_does_not_kill_it(tmp_path: Path, notify: NotifySocket) -> None:
    """After ready, /api/ps blocks (a model loading holds Ollama's scheduler lock): the
    liveness probe asks only `/`, so Ollama is kept."""
    port, marker = free_port(), tmp_path / "ready"
    ollama = stand_in_executable(tmp_path, "ollama-busy", port, 0.2, marker)
    readiness = {**FAST, "failures": 1, "liveness": {"interval": 0.5, "timeout": 0.5}}
    proc = launch(
        tmp_path,
        notify,
        engine="ollama",
        port=port,
        model="llama3",
        contextLength=4096,
        cpuOnly=True,
        executable=str(ollama),
        readiness=readiness,
    )
    try:
        assert any("READY=1" in m for _, m in notify.collect("READY=1", 30))
        # Several liveness rounds, each of which would time out on /api/ps.
        assert not [m for _, m in notify.collect("STATUS=unhealthy", 3) if "unhealthy" in m]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


async def test_status_while_waiting_for_the_gpu(tmp_path: Path, notify: NotifySocket) -> None:
    """The GPU is not visible for two tries: systemd's status says the launcher waits."""
    port, marker = free_port(), tmp_path / "ready"
    gpus = FakeGpus([device(1, 24, uuid="GPU-4090")], unavailable_calls=2, held={1: 1 << 30})
    inst = instance(
        engine="command",
        port=port,
        command=stand_in("crash", port, 0.5, marker),
        gpus=[RTX4090],
        readiness={**FAST, "gpuWait": 10},
    )
    assert await supervisor.run(inst, gpus, Notifier(notify.path)) == 3
    messages = [m for _, m in notify.collect("READY=1", 2)]
    waiting = [m for m in messages if m.startswith("STATUS=waiting for GPUs")]
    assert len(waiting) == 2
    assert "/dev/nvidia-uvm missing" in waiting[0]


def test_refusal_is_in_the_status(tmp_path: Path, notify: NotifySocket) -> None:
    proc = launch(tmp_path, notify, engine="llama-cpp", port=1, model="m", contextLength=1)
    assert proc.wait(30) == 78
    messages = [m for _, m in notify.collect("refused", 2)]
    assert any("STATUS=refused (78)" in m and "gpus: empty" in m for m in messages)
