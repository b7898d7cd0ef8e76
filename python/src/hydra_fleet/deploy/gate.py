"""The gate the host runs on its new system, failing closed.

With the health agent in the new system (its `hydra-health.service` unit, or the agent named in
`etc/hydra-deploy/host.json`), the gate is: the agent's unit active, its `/healthz` answering,
and every check of the new system's `etc/hydra-health/config.json`, each passing N times in a
row. A missing or invalid gate config fails the gate. Without an agent the gate is "no unit
failed", and it says so. A line is printed on every change of a check's state, and at least
every 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hydra_fleet.core.config import FieldProblem, url_problem
from hydra_fleet.core.errors import ConfigError
from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.checks.command import run_argv
from hydra_fleet.health.config import CheckConfig, load_config

AGENT_UNIT = "hydra-health.service"
AGENT_HEALTHZ = "http://127.0.0.1:9446/healthz"
GATE_CONFIG = "etc/hydra-health/config.json"
HOST_CONFIG = "etc/hydra-deploy/host.json"
MAX_INTERVAL = 2.0
REPORT_EVERY = 10.0

Say = Callable[[str], None]
ProbeFn = Callable[[CheckContext], Awaitable[tuple[bool, str]]]


@dataclasses.dataclass
class Probe:
    name: str
    run: ProbeFn
    interval: float


@dataclasses.dataclass
class GatePlan:
    probes: list[Probe]
    passes: int
    timeout: float
    note: str
    problem: str | None = None  # fail at once with this (e.g. a missing gate config)
    systemctl: str = "systemctl"


@dataclasses.dataclass
class GateOutcome:
    ok: bool
    failed: dict[str, str]
    elapsed: float


def _check_probe(check: CheckConfig, systemctl: str | None = None) -> ProbeFn:
    async def run(ctx: CheckContext) -> tuple[bool, str]:
        use = ctx if systemctl is None else CheckContext(ctx.session, systemctl)
        result = await run_check(check, use)
        return result.ok, result.detail

    return run


def _failed_units_probe(systemctl: str) -> ProbeFn:
    async def run(_ctx: CheckContext) -> tuple[bool, str]:
        argv = [systemctl, "list-units", "--state=failed", "--plain", "--no-legend", "--no-pager"]
        code, output = await run_argv(argv, 10.0)
        units = [line.split()[0] for line in output.splitlines() if line.strip()]
        if code != 0:
            return False, f"systemctl list-units exited {code}: {output[-200:]}"
        if units:
            return False, "failed: " + ", ".join(units)
        return True, "no unit failed"

    return run


def agent_of(system: Path) -> dict[str, str] | None:
    """The health agent the new system runs ({unit, healthz}), or None."""
    try:
        host = json.loads((system / HOST_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        host = None
    if isinstance(host, dict) and "agent" in host:
        agent = host["agent"]
        if not isinstance(agent, dict):
            return None
        return {
            "unit": str(agent.get("unit", AGENT_UNIT)),
            "healthz": str(agent.get("healthz", AGENT_HEALTHZ)),
        }
    if (system / "etc/systemd/system" / AGENT_UNIT).exists():
        return {"unit": AGENT_UNIT, "healthz": AGENT_HEALTHZ}
    return None


def configured_timeout(system: Path) -> float | None:
    """`gate.timeout` of the new system's gate config, when it can be read."""
    try:
        data = json.loads((system / GATE_CONFIG).read_text(encoding="utf-8"))
        return float(data["gate"]["timeout"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_gate(system: Path, systemctl: str, timeout: float | None) -> GatePlan:
    agent = agent_of(system)
    if agent is None:
        probes = [Probe("units", _failed_units_probe(systemctl), MAX_INTERVAL)]
        note = "no health agent in the new system: gated on activation and every unit active"
        return GatePlan(probes, 3, timeout or 300.0, note, systemctl=systemctl)
    if (problem := url_problem(agent["healthz"])) is not None:
        problem = f"{system / HOST_CONFIG}: agent: healthz: {problem}"
        return GatePlan([], 3, timeout or 300.0, "health agent", problem)
    try:
        agent_probes = [
            Probe(
                "hydra-health",
                _check_probe(
                    CheckConfig(type="systemd", unit=agent["unit"], interval=2, timeout=2),
                    systemctl,
                ),
                1.0,
            ),
            Probe(
                "hydra-health /healthz",
                _check_probe(
                    CheckConfig(
                        type="http", url=agent["healthz"], interval=2, timeout=2, connect_timeout=1
                    )
                ),
                1.0,
            ),
        ]
    except FieldProblem as err:
        problem = f"{system / HOST_CONFIG}: agent: {err}"
        return GatePlan([], 3, timeout or 300.0, "health agent", problem)
    config_file = system / GATE_CONFIG
    note = f"health agent {agent['unit']}; checks from {config_file}"
    if not config_file.exists():
        problem = (
            f"the new system runs the health agent ({agent['unit']}) but has no gate config "
            f"{config_file}"
        )
        return GatePlan(agent_probes, 3, timeout or 300.0, note, problem)
    try:
        config = load_config(config_file)
    except ConfigError as err:
        return GatePlan(agent_probes, 3, timeout or 300.0, note, f"gate config: {err}")
    probes = agent_probes + [
        Probe(name, _check_probe(check), min(check.interval, MAX_INTERVAL))
        for name, check in config.checks.items()
    ]
    return GatePlan(
        probes,
        config.gate.passes,
        timeout or config.gate.timeout,
        note,
        systemctl=config.systemctl,
    )


async def run_gate(plan: GatePlan, say: Say) -> GateOutcome:
    started = time.monotonic()
    if plan.problem is not None:
        return GateOutcome(False, {"gate config": plan.problem}, 0.0)
    names = [p.name for p in plan.probes]
    streak = dict.fromkeys(names, 0)
    detail = dict.fromkeys(names, "not run yet")
    state: dict[str, bool | None] = dict.fromkeys(names, None)
    changed = asyncio.Event()  # wakes the reporter: a state changed or a check is done
    dirty = [False]  # a state changed since the last line
    ctx = CheckContext.create(plan.systemctl)

    async def watch(probe: Probe) -> None:
        while streak[probe.name] < plan.passes:
            began = time.monotonic()
            ok, text = await probe.run(ctx)
            streak[probe.name] = streak[probe.name] + 1 if ok else 0
            detail[probe.name] = text
            if state[probe.name] is not ok:
                state[probe.name] = ok
                dirty[0] = True
                changed.set()
            if streak[probe.name] < plan.passes:
                await asyncio.sleep(max(0.0, began + probe.interval - time.monotonic()))
        changed.set()

    tasks = [asyncio.create_task(watch(p)) for p in plan.probes]
    last_line = 0.0
    try:
        while True:
            done = all(streak[n] >= plan.passes for n in names)
            elapsed = time.monotonic() - started
            if done or elapsed >= plan.timeout:
                break
            changed.clear()
            if dirty[0] or time.monotonic() - last_line >= REPORT_EVERY:
                dirty[0] = False
                say(
                    _progress(
                        plan,
                        names=names,
                        state=state,
                        streak=streak,
                        detail=detail,
                        started=started,
                    )
                )
                last_line = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(0.5, plan.timeout - elapsed))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctx.close()
    failed = {
        n: f"{detail[n]} ({streak[n]}/{plan.passes} passes in a row)"
        for n in names
        if streak[n] < plan.passes
    }
    return GateOutcome(not failed, failed, time.monotonic() - started)


def _progress(
    plan: GatePlan,
    *,
    names: list[str],
    state: dict[str, bool | None],
    streak: dict[str, int],
    detail: dict[str, str],
    started: float,
) -> str:
    """`12/300 s  2/4 passing (3 in a row needed): a 3/3, b 1/3  failing: c: HTTP 503`."""
    passing = [n for n in names if state[n]]
    failing = [n for n in names if state[n] is False]
    waiting = [n for n in names if state[n] is None]
    counts = ", ".join(f"{n} {streak[n]}/{plan.passes}" for n in passing)
    parts = [
        f"{time.monotonic() - started:.0f}/{plan.timeout:g} s",
        f"{len(passing)}/{len(names)} passing ({plan.passes} in a row needed)"
        + (f": {counts}" if counts else ""),
    ]
    if failing:
        parts.append("failing: " + "; ".join(f"{n}: {detail[n]}" for n in failing))
    if waiting:
        parts.append("no answer yet: " + ", ".join(waiting))
    return "  ".join(parts)
