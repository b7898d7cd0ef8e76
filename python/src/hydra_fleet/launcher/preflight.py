"""Preflight: GPUs visible, driver new enough, model fits, port free. `plan` shows it, `run`
enforces it: 75 for what may clear (GPU not yet visible, memory held, port busy), 78 for what
will not (does not fit, vLLM over unequal GPUs, driver too old)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hydra_fleet.core.errors import EX_CONFIG, HydraError, TemporaryError
from hydra_fleet.core.log import get_logger
from hydra_fleet.launcher import fit as fitting
from hydra_fleet.launcher.config import GIB, Instance
from hydra_fleet.launcher.gpu_probe import (
    DeviceState,
    DriverInfo,
    GpuProbe,
    GpuUnavailable,
    driver_problem,
)
from hydra_fleet.launcher.modelinfo import ModelFacts, model_facts

log = get_logger("hydra.launch")


class RefusedError(HydraError):
    """The preflight refuses a configuration that cannot work as written."""

    exit_code = EX_CONFIG


@dataclass
class Preflight:
    instance: Instance
    facts: ModelFacts
    fit: fitting.Fit
    devices: list[DeviceState | None]
    driver: DriverInfo | None
    fatal: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        parts = []
        if self.fatal:
            parts.append("refused (78): " + "; ".join(self.fatal))
        if self.temporary:
            parts.append("not now (75): " + "; ".join(self.temporary))
        return " | ".join(parts) or "ok"

    def enforce(self) -> None:
        if self.fatal:
            raise RefusedError("; ".join(self.fatal))
        if self.temporary:
            raise TemporaryError("; ".join(self.temporary))


def _match(instance: Instance, found: list[DeviceState]) -> tuple[list[DeviceState | None], str]:
    matched: list[DeviceState | None] = []
    missing = []
    for gpu in instance.gpus:
        hit = next(
            (d for d in found if (d.uuid == gpu.uuid if gpu.uuid else d.index == gpu.index)),
            None,
        )
        matched.append(hit)
        if hit is None:
            missing.append(f"{gpu.label} ({gpu.uuid or f'index {gpu.index}'})")
    problem = ""
    if missing:
        problem = f"GPU not visible: {', '.join(missing)} ({len(found)} device(s) seen)"
    return matched, problem


def see_gpus(
    instance: Instance,
    probe: GpuProbe | None,
    wait: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[DeviceState | None], DriverInfo | None, str]:
    """The pinned GPUs' states, retrying with backoff for `wait` seconds while any is unseen."""
    if not instance.gpus or probe is None:
        return [None] * len(instance.gpus), None, ""
    waited = 0.0
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            found = probe.devices()
            matched, problem = _match(instance, found)
            if not problem:
                return matched, probe.driver(), ""
        except GpuUnavailable as err:
            matched, problem = [None] * len(instance.gpus), str(err)
        left = wait - waited
        if left <= 0:
            return matched, None, problem
        log.warning("gpus not visible yet", attempt=attempt, problem=problem, retry_in=delay)
        sleep(min(delay, left))
        waited += min(delay, left)
        delay = min(delay * 2, 10.0)


def port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            return f"port {host}:{port} is busy ({err.strerror}); the engine would not get it"
    return None


def run(
    instance: Instance,
    probe: GpuProbe | None,
    *,
    wait: float = 0.0,
    check_port: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Preflight:
    """Gather every fact and every problem; raise nothing (see `Preflight.enforce`)."""
    fatal: list[str] = []
    temporary: list[str] = []
    notes: list[str] = []
    model = Path(instance.model)
    if instance.engine != "command" and model.is_absolute() and not model.exists():
        fatal.append(f"model {instance.model} does not exist")
    facts = model_facts(instance)
    devices, driver, visibility = see_gpus(instance, probe, wait, sleep)
    if visibility:
        temporary.append(visibility)
    if driver is not None:
        for gpu in instance.gpus:
            problem = driver_problem(gpu.arch, gpu.model, driver)
            if problem:
                fatal.append(problem)
    capacities = [
        d.total if d else g.capacity_bytes for g, d in zip(instance.gpus, devices, strict=True)
    ]
    free = [d.free if d else None for d in devices]
    fit = fitting.compute(instance, facts, capacities, free)
    fatal += fit.problems
    if fit.checked and not fit.fits:
        short = [g for g in fit.gpus if not g.fits_capacity]
        where = ", ".join(
            f"{g.gpu.label} needs {g.need / GIB:.2f} GiB of {g.capacity / GIB:.2f} GiB"
            for g in short
        )
        largest = fit.largest_context
        hint = (
            f"the largest context that fits is {largest}"
            if largest
            else "no context fits: use fewer bits per weight or more GPUs"
        )
        fatal.append(f"context {fit.context} does not fit ({where}); {hint}")
    elif fit.checked and not fit.fits_now:
        busy = ", ".join(
            f"{g.gpu.label} has {(g.free or 0) / GIB:.2f} GiB free, needs {g.claim / GIB:.2f} GiB"
            for g in fit.gpus
            if not g.fits_free
        )
        temporary.append(f"VRAM held by other processes: {busy}")
    if not fit.checked and instance.engine != "command":
        notes.append(
            "VRAM fit not checked: "
            + ("no GPUs pinned" if not instance.gpus else "model size unknown (set modelInfo)")
        )
    if check_port:
        problem = port_problem(instance.host, instance.port)
        if problem:
            temporary.append(problem)
    return Preflight(instance, facts, fit, devices, driver, fatal, temporary, notes)
