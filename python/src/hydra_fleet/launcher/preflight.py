"""Preflight: GPUs visible, driver new enough, model sound and fits, port free. `plan` and
`check` show it, `run` enforces it: 75 for what may clear (GPU not yet visible, memory held,
port busy), 78 for what will not (model missing or truncated, a context above the trained
one, does not fit, siblings on the card already plan the memory, vLLM over unequal GPUs,
driver too old). Every fatal line starts with the config field it is about."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hydra_fleet.core.errors import EX_CONFIG, ConfigError, HydraError, TemporaryError
from hydra_fleet.core.log import get_logger
from hydra_fleet.launcher import fit as fitting
from hydra_fleet.launcher import ledger
from hydra_fleet.launcher.config import GIB, Instance
from hydra_fleet.launcher.engines import engine_for
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

    def enforce(self, source: str = "config") -> None:
        if self.fatal:
            raise RefusedError(f"{source}: " + "; ".join(self.fatal))
        if self.temporary:
            raise TemporaryError(f"{source}: " + "; ".join(self.temporary))


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
    on_wait: Callable[[str], None] | None = None,
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
        if on_wait is not None:
            on_wait(f"waiting for GPUs ({waited:.0f}s of {wait:.0f}s): {problem}")
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


def _model(instance: Instance, static: bool, fatal: list[str], notes: list[str]) -> ModelFacts:
    """The model's facts, and what is wrong with the model itself (missing, truncated, a
    context above its trained one, a format the engine build cannot load)."""
    engine = engine_for(instance)
    model = Path(instance.model)
    facts = ModelFacts(source="")
    if not static and engine.needs_model and model.is_absolute() and not model.exists():
        fatal.append(f"model: {instance.model} does not exist")
        facts = model_facts(instance, read_files=False)
    else:
        try:
            facts = model_facts(instance, read_files=not static)
        except ConfigError as err:
            fatal.append(f"model: {err.source}: {err.problem}")
            facts = model_facts(instance, read_files=False)
    engine_fatal, engine_notes = engine.model_problems(instance, static)
    fatal += engine_fatal
    notes += engine_notes
    context = instance.context_length or 0
    if facts.max_context and context > facts.max_context:
        fatal.append(
            f"contextLength: {context} is above the model's trained context "
            f"{facts.max_context} ({facts.source}): the engine would cap each slot yet allocate "
            "the KV cache for all of it; lower contextLength, or state modelInfo.maxContext "
            "where RoPE scaling extends the model"
        )
    return facts


def _siblings_room(
    instance: Instance,
    siblings: list[Instance],
    capacities: list[int],
    free: list[int | None],
    notes: list[str],
) -> set[int]:
    """Take what siblings on the same GPUs are planned to hold off capacity and free memory
    (in place); the indices of the GPUs shared."""
    taken = ledger.taken_by_siblings(instance, siblings)
    for i, gpu in enumerate(instance.gpus):
        if gpu.index not in taken:
            continue
        held, names = taken[gpu.index]
        notes.append(
            f"{gpu.label}: {held / GIB:.2f} GiB planned for {', '.join(names)} "
            "(siblingsFile), counted as taken"
        )
        capacities[i] -= held
        current = free[i]
        if current is not None:
            free[i] = min(current, capacities[i])
    return set(taken)


def run(
    instance: Instance,
    probe: GpuProbe | None,
    *,
    wait: float = 0.0,
    check_port: bool = False,
    static: bool = False,
    siblings: list[Instance] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[str], None] | None = None,
) -> Preflight:
    """Gather every fact and every problem; raise nothing (see `Preflight.enforce`).

    `static`: read no model file, GPU or port (the build-time check): `modelInfo` only.
    """
    fatal: list[str] = []
    temporary: list[str] = []
    notes: list[str] = []
    engine = engine_for(instance)
    facts = _model(instance, static, fatal, notes)
    devices: list[DeviceState | None] = [None] * len(instance.gpus)
    driver: DriverInfo | None = None
    visibility = ""
    if not static:
        devices, driver, visibility = see_gpus(instance, probe, wait, sleep, on_wait)
    if visibility:
        temporary.append(visibility)
    if driver is not None:
        for gpu in instance.gpus:
            problem = driver_problem(gpu.arch, gpu.model, driver)
            if problem:
                fatal.append(f"gpus: {problem}")
    capacities = [
        d.total if d else g.capacity_bytes for g, d in zip(instance.gpus, devices, strict=True)
    ]
    free: list[int | None] = [d.free if d else None for d in devices]
    taken = _siblings_room(instance, siblings or [], capacities, free, notes)
    fit = fitting.compute(instance, facts, capacities, free)
    fatal += fit.problems
    if fit.checked and not fit.fits:
        short = [g for g in fit.gpus if not g.fits_capacity]
        where = ", ".join(
            f"{g.gpu.label} needs {g.need / GIB:.2f} GiB of {g.capacity / GIB:.2f} GiB"
            + (" left by its siblings" if g.gpu.index in taken else "")
            for g in short
        )
        largest = fit.largest_context
        hint = (
            (f"the largest context that fits is {largest}" if largest else "no context fits")
            + "; "
            + _room_knobs(instance)
        )
        fatal.append(f"contextLength: context {fit.context} does not fit ({where}); {hint}")
    elif fit.checked and not fit.fits_now:
        busy = ", ".join(
            f"{g.gpu.label} has {(g.free or 0) / GIB:.2f} GiB free, needs {g.claim / GIB:.2f} GiB"
            for g in fit.gpus
            if not g.fits_free
        )
        temporary.append(f"VRAM held by other processes: {busy}")
    if not fit.checked and engine.needs_model and not instance.cpu_only:
        notes.append(
            "VRAM fit not checked: "
            + ("no GPUs pinned" if not instance.gpus else "model size unknown (set modelInfo)")
        )
    if instance.cpu_only:
        notes.append("CPU only (cpuOnly: true): the engine runs on the CPU, no GPU is used")
    if check_port and not static:
        problem = port_problem(instance.listen_address, instance.port)
        if problem:
            temporary.append(problem)
    return Preflight(instance, facts, fit, devices, driver, fatal, temporary, notes)


def _room_knobs(instance: Instance) -> str:
    """The settings that make room on the card, with their current values, in the order that
    costs the least quality."""
    smaller = [c for c in ("q8", "q4") if c != instance.cache_type]
    knobs = [
        f"a smaller KV cache (cacheType {' or '.join(smaller)}; now {instance.cache_type})",
        f"less spare room (headroom; now {instance.headroom:g})",
        "fewer bits per weight",
        "more GPUs",
    ]
    return "or make room with " + ", ".join(knobs)
