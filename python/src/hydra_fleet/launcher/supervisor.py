"""`run`: start the engine in its own process group, tell systemd when it is ready, watch it.

Before start: STATUS= while waiting for the GPUs and on a refusal; the engine's binary is
asked (`--help`) where a flag depends on its version. Loading: STATUS= and
EXTEND_TIMEOUT_USEC= every probe interval (logged at most every `LOG_EVERY` seconds), so a
start that is still making progress is not killed by TimeoutStartSec; our own
`readiness.timeout` is the hard limit. The engine's output passes through the launcher: an
engine that exits during start-up printing an argument or model error (its `refusals`) is a
configuration error (78) carrying that line, so systemd stops restarting it. Ready: the
engine's readiness probe passes and, where NVML or fdinfo can tell, the engine's processes
hold memory on the pinned GPUs (a CPU fallback is a failure). Then READY=1 and the liveness
probe on its own slower cadence (`readiness.liveness`); a reload ("loading") is not a
failure; the child's death or `readiness.failures` failed probes in a row end the run
non-zero. SIGTERM/SIGINT: STOPPING=1, SIGTERM to the group, SIGKILL after `stopTimeout`,
then wait (up to `releaseTimeout`) for the GPU memory to be released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from hydra_fleet.core.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_TEMPFAIL,
    ConfigError,
    HydraError,
)
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.sdnotify import Notifier
from hydra_fleet.launcher import preflight
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines import Features, LaunchSpec, engine_for, launch_spec
from hydra_fleet.launcher.gpu_probe import GpuProbe
from hydra_fleet.launcher.readiness import Prober

log = get_logger("hydra.launch")

_DROPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
LOG_EVERY = 10.0  # seconds between "still loading" log lines
TAIL_BYTES = 64 * 1024
VERSION_TIMEOUT = 20.0


class OutputTail:
    """The engine's output, passed through to ours as it comes, with its last lines kept."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def pump(self, stream: asyncio.StreamReader, sink: BinaryIO) -> None:
        while chunk := await stream.read(65536):
            with contextlib.suppress(OSError, ValueError):
                sink.write(chunk)
                sink.flush()
            self.data += chunk
            if len(self.data) > 2 * TAIL_BYTES:
                del self.data[:-TAIL_BYTES]

    def lines(self) -> list[str]:
        return bytes(self.data[-TAIL_BYTES:]).decode("utf-8", errors="replace").splitlines()


def ask_binary(argv0: str, flag: str, env: dict[str, str]) -> Features | None:
    """Run `argv0 flag` (`--help`/`--version`) for what this build has; None if it cannot."""
    try:
        done = subprocess.run(
            [argv0, flag],
            capture_output=True,
            timeout=VERSION_TIMEOUT,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("engine version not checked", executable=argv0, error=str(err))
        return None
    text = (done.stdout + done.stderr).decode("utf-8", errors="replace")
    return Features(text)


def session_pids(sid: int, proc: Path = Path("/proc")) -> set[int]:
    """Every process whose session id is `sid` (the engine and everything it started)."""
    pids = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.add(int(entry.name))
    return pids


def write_files(spec: LaunchSpec) -> None:
    """The engine's generated files (secrets 0600) and its working directory."""
    if spec.cwd is not None:
        Path(spec.cwd).mkdir(parents=True, exist_ok=True)
    for name, text in spec.files.items():
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600 if name in spec.secret_files else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, mode)


def features_for(
    instance: Instance, pre: preflight.Preflight, environ: dict[str, str]
) -> Features | None:
    """Ask the engine's binary (`--help`) where a flag depends on its version; None when
    the engine needs no asking or the binary is not here (then the current build is assumed)."""
    flag = engine_for(instance).version_flag(instance)
    if flag is None:
        return None
    first = launch_spec(instance, pre.fit, environ)
    if shutil.which(first.argv[0], path=environ.get("PATH")) is None:
        return None
    env = {k: v for k, v in environ.items() if k not in _DROPPED_ENV}
    env.update(first.env)
    return ask_binary(first.argv[0], flag, env)


class Supervisor:
    def __init__(
        self,
        instance: Instance,
        probe: GpuProbe | None,
        notifier: Notifier,
        environ: dict[str, str],
        *,
        source: str = "config",
        siblings: list[Instance] | None = None,
    ) -> None:
        self.instance = instance
        self.gpu = probe
        self.notifier = notifier
        self.environ = environ
        self.source = source
        self.siblings = siblings or []
        self.stop = asyncio.Event()
        self.seen_pids: set[int] = set()
        self.child: asyncio.subprocess.Process | None = None
        self.output = OutputTail()
        self.pumps: list[asyncio.Task[None]] = []
        self.spec: LaunchSpec | None = None
        self.exit_reported = False

    def _status(self, text: str) -> None:
        self.notifier.status(text)

    def _refuse(self, err: HydraError) -> None:
        self.notifier.status(f"refused ({err.exit_code}): {err}"[:400])

    async def run(self) -> int:
        instance = self.instance
        try:
            pre = await asyncio.to_thread(
                preflight.run,
                instance,
                self.gpu,
                wait=instance.readiness.gpu_wait,
                check_port=True,
                siblings=self.siblings,
                on_wait=self._status,
            )
            pre.enforce(self.source)
            spec = self._spec(pre)
        except HydraError as err:
            self._refuse(err)
            raise
        self.spec = spec
        for note in pre.notes + list(spec.notes):
            log.info("plan note", note=note)
        write_files(spec)
        env = {k: v for k, v in self.environ.items() if k not in _DROPPED_ENV}
        # The output goes through a pipe: Python engines would hold their lines back.
        env["PYTHONUNBUFFERED"] = "1"
        env.update(spec.env)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        mode = "CPU only (cpuOnly: true)" if instance.cpu_only else "on its GPUs"
        log.info("starting engine", engine=instance.engine, mode=mode, argv=" ".join(spec.argv))
        self.notifier.status(f"starting {instance.engine} {mode}")
        try:
            self.child = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as err:
            field = "command" if instance.engine == "command" else "executable"
            error = ConfigError(self.source, field, f"cannot start {spec.argv[0]}: {err.strerror}")
            self._refuse(error)
            raise error from err
        assert self.child.stdout is not None
        assert self.child.stderr is not None
        self.pumps = [
            asyncio.create_task(self.output.pump(self.child.stdout, sys.stdout.buffer)),
            asyncio.create_task(self.output.pump(self.child.stderr, sys.stderr.buffer)),
        ]
        readiness = instance.readiness
        prober = Prober(spec.probe, readiness.probe_timeout, bool(instance.gpus))
        live = Prober(spec.liveness or spec.probe, readiness.liveness.timeout, bool(instance.gpus))
        try:
            return await self._supervise(prober, live)
        finally:
            await prober.close()
            await live.close()
            await self._stop_group()
            await self._drain()
            for task in self.pumps:
                task.cancel()
            await asyncio.gather(*self.pumps, return_exceptions=True)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _spec(self, pre: preflight.Preflight) -> LaunchSpec:
        """The launch spec, after asking the binary where a flag depends on its version."""
        instance = self.instance
        features = features_for(instance, pre, self.environ)
        spec = launch_spec(instance, pre.fit, self.environ, reveal=True, features=features)
        for directory in spec.dirs:
            Path(directory).mkdir(parents=True, exist_ok=True)
        return spec

    async def _drain(self) -> None:
        """Let the output pumps catch up (the child has exited), so its last lines are seen.

        Until EOF, or until the output stops growing (a grandchild may hold the pipe open).
        """
        deadline = time.monotonic() + 2.0
        seen = -1
        while self.pumps and time.monotonic() < deadline:
            if all(task.done() for task in self.pumps) or len(self.output.data) == seen:
                return
            seen = len(self.output.data)
            await asyncio.wait(self.pumps, timeout=0.1)

    async def _start_failure(self, code: int) -> int:
        """The engine exited before it was ready: its own refusal line makes it a 78."""
        await self._drain()
        line = engine_for(self.instance).refusal(self.output.lines())
        if line is None:
            return code
        error = ConfigError(
            self.source,
            "model" if "model" in line.lower() else "settings",
            f"{self.instance.engine} refused to start (exit {code}): {line}",
        )
        self._refuse(error)
        raise error

    async def _wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the child exits or a stop is asked."""
        assert self.child is not None
        waits = [
            asyncio.ensure_future(self.child.wait()),
            asyncio.ensure_future(self.stop.wait()),
        ]
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _died(self) -> int | None:
        assert self.child is not None
        code = self.child.returncode
        if code is None:
            return None
        if not self.exit_reported:
            self.exit_reported = True
            log.error("engine exited", code=code)
            self.notifier.status(f"engine exited with code {code}")
        return code if code > 0 else EX_FAILURE

    async def _supervise(self, prober: Prober, live: Prober) -> int:
        code = await self._until_ready(prober)
        if code is not None:
            return code
        return await self._serve(live)

    async def _until_ready(self, prober: Prober) -> int | None:
        """None once READY=1 was sent; else the exit code."""
        readiness = self.instance.readiness
        assert self.child is not None
        started = time.monotonic()
        extend = 3 * (max(readiness.interval, 1.0) + readiness.probe_timeout)
        self.notifier.send("STATUS=starting engine", f"EXTEND_TIMEOUT_USEC={int(extend * 1e6)}")
        last_note = started
        last_log = started
        while True:
            if (code := self._died()) is not None:
                return await self._start_failure(code)
            if self.stop.is_set():
                return EX_OK
            result = await prober.check()
            if self._died() is not None:
                continue
            if result.fatal:
                log.error("engine cannot become ready", reason=result.fatal)
                self.notifier.status(result.fatal)
                return EX_CONFIG
            if result.ready:
                break
            waited = time.monotonic() - started
            if waited > readiness.timeout:
                log.error("engine not ready in time", seconds=round(waited), last=result.detail)
                self.notifier.status(f"not ready after {waited:.0f}s: {result.detail}")
                return EX_FAILURE
            if time.monotonic() - last_note >= min(1.0, extend / 3):  # at most once a second
                last_note = time.monotonic()
                self.notifier.send(
                    f"STATUS=loading ({waited:.0f}s): {result.detail}",
                    f"EXTEND_TIMEOUT_USEC={int(extend * 1e6)}",
                )
            if time.monotonic() - last_log >= LOG_EVERY:
                last_log = time.monotonic()
                log.info("engine loading", seconds=round(waited), probe=result.detail)
            await self._wait(readiness.interval)
        if (problem := await self._placement(result.cpu_fallback)) is not None:
            problem += self._target_hint()
            log.error("engine not on its GPUs", problem=problem)
            self.notifier.status(problem)
            return EX_TEMPFAIL
        elapsed = time.monotonic() - started
        log.info("engine ready", seconds=round(elapsed, 2), probe=result.detail)
        self.notifier.ready(f"ready: {self.instance.name} on port {self.instance.port}")
        return None

    async def _serve(self, prober: Prober) -> int:
        """Liveness after READY=1, on its own cadence; a reload is loading, not dead."""
        readiness = self.instance.readiness
        failures = 0
        loading_since: float | None = None
        while True:
            await self._wait(readiness.liveness.interval)
            if (code := self._died()) is not None:
                return code
            if self.stop.is_set():
                return EX_OK
            result = await prober.check()
            if self._died() is not None or self.stop.is_set():
                continue
            if result.ready:
                if failures or loading_since is not None:
                    log.info("engine answers again", probe=result.detail)
                    self.notifier.status(
                        f"ready: {self.instance.name} on port {self.instance.port}"
                    )
                failures, loading_since = 0, None
                continue
            if result.loading:
                now = time.monotonic()
                if loading_since is None:
                    loading_since = now
                    log.info("engine reloading", probe=result.detail)
                    self.notifier.status(f"reloading: {result.detail}")
                if now - loading_since <= readiness.timeout:
                    failures = 0
                    continue
            failures += 1
            log.warning("probe failed", failures=failures, detail=result.detail)
            if failures >= readiness.failures:
                self.notifier.status(f"unhealthy: {result.detail}")
                return EX_FAILURE

    def _target_hint(self) -> str:
        """An AMD card the engine build may not have been compiled for (e.g. Ollama and
        gfx906: not among upstream's ROCm targets; unsupported cards are dropped)."""
        archs = sorted({g.arch for g in self.instance.gpus if g.vendor == "amd"})
        if not archs:
            return ""
        return (
            f"; the GPU is visible, so check that this {self.instance.engine} build has "
            f"{', '.join(archs)} among its ROCm targets (nixpkgs: rocmGpuTargets)"
        )

    async def _placement(self, cpu_fallback: bool) -> str | None:
        instance = self.instance
        if cpu_fallback:
            return "engine loaded the model (partly) on the CPU, not on its GPUs"
        if not instance.gpus or not instance.check_placement or self.gpu is None:
            return None
        assert self.child is not None
        pids = await asyncio.to_thread(session_pids, self.child.pid)
        self.seen_pids |= pids
        held = await asyncio.to_thread(self.gpu.process_memory, pids)
        if held is None:
            log.info("placement not checked", reason="per-process GPU memory unavailable")
            return None
        on_pinned = sum(held.get(gpu.index, 0) for gpu in instance.gpus)
        if on_pinned == 0:
            return "engine is ready but holds no memory on its GPUs: it fell back to the CPU"
        return None

    async def _stop_group(self) -> None:
        child = self.child
        if child is None:
            return
        if child.returncode is None:
            self.notifier.stopping()
            self.seen_pids |= session_pids(child.pid)
        pgid = child.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), self.instance.readiness.stop_timeout)
        except TimeoutError:
            log.warning("engine ignored SIGTERM; killing its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        await child.wait()
        await self._wait_released()

    async def _wait_released(self) -> None:
        if self.gpu is None or not self.instance.gpus or not self.seen_pids:
            return
        deadline = time.monotonic() + self.instance.readiness.release_timeout
        while time.monotonic() < deadline:
            held = await asyncio.to_thread(self.gpu.process_memory, self.seen_pids)
            if not held or not any(held.values()):
                return
            await asyncio.sleep(0.5)
        log.warning("gpu memory still held after stop", pids=sorted(self.seen_pids))


async def run(
    instance: Instance,
    probe: GpuProbe | None,
    notifier: Notifier | None = None,
    environ: dict[str, str] | None = None,
    *,
    source: str = "config",
    siblings: list[Instance] | None = None,
) -> int:
    env = dict(os.environ if environ is None else environ)
    notifier = notifier or Notifier()
    supervisor = Supervisor(instance, probe, notifier, env, source=source, siblings=siblings)
    return await supervisor.run()
