"""`run`: start the engine in its own process group, tell systemd when it is ready, watch it.

Loading: STATUS= and EXTEND_TIMEOUT_USEC= every probe interval, so a start that is still
making progress is not killed by TimeoutStartSec; our own `readiness.timeout` is the hard
limit. Ready: the engine's probe passes and, where NVML or fdinfo can tell, the engine's
processes hold memory on the pinned GPUs (a CPU fallback is a failure). Then READY=1 and
keep probing; the child's death or `readiness.failures` failed probes in a row end the run
non-zero. SIGTERM/SIGINT: STOPPING=1, SIGTERM to the group, SIGKILL after `stopTimeout`,
then wait (up to `releaseTimeout`) for the GPU memory to be released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from hydra_fleet.core.errors import EX_CONFIG, EX_FAILURE, EX_OK, EX_TEMPFAIL, ConfigError
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.sdnotify import Notifier
from hydra_fleet.launcher import preflight
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines import LaunchSpec, launch_spec
from hydra_fleet.launcher.gpu_probe import GpuProbe
from hydra_fleet.launcher.readiness import Prober

log = get_logger("hydra.launch")

_DROPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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


class Supervisor:
    def __init__(
        self,
        instance: Instance,
        probe: GpuProbe | None,
        notifier: Notifier,
        environ: dict[str, str],
    ) -> None:
        self.instance = instance
        self.gpu = probe
        self.notifier = notifier
        self.environ = environ
        self.stop = asyncio.Event()
        self.seen_pids: set[int] = set()
        self.child: asyncio.subprocess.Process | None = None

    async def run(self) -> int:
        instance = self.instance
        pre = await asyncio.to_thread(
            preflight.run, instance, self.gpu, wait=instance.readiness.gpu_wait, check_port=True
        )
        pre.enforce()
        spec = launch_spec(instance, pre.fit, self.environ, reveal=True)
        write_files(spec)
        env = {k: v for k, v in self.environ.items() if k not in _DROPPED_ENV}
        env.update(spec.env)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        log.info("starting engine", engine=instance.engine, argv=" ".join(spec.argv))
        try:
            self.child = await asyncio.create_subprocess_exec(
                *spec.argv, env=env, cwd=spec.cwd, start_new_session=True
            )
        except OSError as err:
            field = "command" if instance.engine == "command" else "executable"
            raise ConfigError(
                "config", field, f"cannot start {spec.argv[0]}: {err.strerror}"
            ) from err
        prober = Prober(spec.probe, instance.readiness.probe_timeout, bool(instance.gpus))
        try:
            return await self._supervise(prober)
        finally:
            await prober.close()
            await self._stop_group()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

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
        log.error("engine exited", code=code)
        self.notifier.status(f"engine exited with code {code}")
        return code if code > 0 else EX_FAILURE

    async def _supervise(self, prober: Prober) -> int:
        code = await self._until_ready(prober)
        if code is not None:
            return code
        return await self._serve(prober)

    async def _until_ready(self, prober: Prober) -> int | None:
        """None once READY=1 was sent; else the exit code."""
        readiness = self.instance.readiness
        assert self.child is not None
        started = time.monotonic()
        extend = 3 * (max(readiness.interval, 1.0) + readiness.probe_timeout)
        self.notifier.send("STATUS=starting engine", f"EXTEND_TIMEOUT_USEC={int(extend * 1e6)}")
        last_note = started
        while True:
            if (code := self._died()) is not None:
                return code
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
            await self._wait(readiness.interval)
        if (problem := await self._placement(result.cpu_fallback)) is not None:
            log.error("engine not on its GPUs", problem=problem)
            self.notifier.status(problem)
            return EX_TEMPFAIL
        elapsed = time.monotonic() - started
        log.info("engine ready", seconds=round(elapsed, 2), probe=result.detail)
        self.notifier.ready(f"ready: {self.instance.name} on port {self.instance.port}")
        return None

    async def _serve(self, prober: Prober) -> int:
        readiness = self.instance.readiness
        failures = 0
        while True:
            await self._wait(readiness.interval)
            if (code := self._died()) is not None:
                return code
            if self.stop.is_set():
                return EX_OK
            result = await prober.check()
            failures = 0 if result.ready else failures + 1
            if failures:
                log.warning("probe failed", failures=failures, detail=result.detail)
            if failures >= readiness.failures:
                self.notifier.status(f"unhealthy: {result.detail}")
                return EX_FAILURE

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
) -> int:
    env = dict(os.environ if environ is None else environ)
    return await Supervisor(instance, probe, notifier or Notifier(), env).run()
