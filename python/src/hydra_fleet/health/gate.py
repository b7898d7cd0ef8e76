"""The deploy gate: every check must pass `passes` times in a row before the timeout.

Each check runs on its own interval (at most `MAX_GATE_INTERVAL` apart, so a gate does not
wait 30 s between tries); a failure resets that check's run of passes.
"""

from __future__ import annotations

import asyncio
import dataclasses

from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.clock import Clock, SystemClock
from hydra_fleet.health.config import CheckConfig

MAX_GATE_INTERVAL = 2.0


@dataclasses.dataclass
class GateResult:
    ok: bool
    passed: list[str]
    failed: dict[str, str]

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "passed": self.passed, "failed": self.failed}


async def run_gate(
    checks: dict[str, CheckConfig],
    passes: int,
    within: float,
    *,
    systemctl: str = "systemctl",
    clock: Clock | None = None,
) -> GateResult:
    clock = clock or SystemClock()
    ctx = CheckContext.create(systemctl)
    streak = dict.fromkeys(checks, 0)
    last = dict.fromkeys(checks, "not run")

    async def watch(name: str, check: CheckConfig) -> None:
        interval = min(check.interval, MAX_GATE_INTERVAL)
        while streak[name] < passes:
            started = clock.monotonic()
            result = await run_check(check, ctx)
            streak[name] = streak[name] + 1 if result.ok else 0
            last[name] = result.detail
            if streak[name] < passes:
                await clock.sleep(max(0.0, started + interval - clock.monotonic()))

    try:
        tasks = [asyncio.create_task(watch(n, c)) for n, c in checks.items()]
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await ctx.close()
    passed = sorted(n for n, count in streak.items() if count >= passes)
    failed = {
        n: f"{last[n]} ({streak[n]}/{passes} passes in a row)"
        for n in sorted(checks)
        if streak[n] < passes
    }
    return GateResult(not failed, passed, failed)
