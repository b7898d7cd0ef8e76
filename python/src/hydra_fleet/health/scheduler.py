"""Run every check on its own interval, each in its own task, from a random start offset.

A hung check costs only its own deadline: no check ever waits for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.checks import CheckContext, CheckResult, run_check
from hydra_fleet.health.clock import Clock
from hydra_fleet.health.config import CheckConfig

log = get_logger("hydra.health.scheduler")

OnResult = Callable[[str, CheckResult], Awaitable[None]]


class Scheduler:
    def __init__(
        self,
        checks: dict[str, CheckConfig],
        ctx: CheckContext,
        clock: Clock,
        on_result: OnResult,
        *,
        rng: random.Random | None = None,
        spread: bool = True,
    ) -> None:
        self.checks = checks
        self.ctx = ctx
        self.clock = clock
        self.on_result = on_result
        self.rng = rng or random.Random()  # noqa: S311 - start offsets, not security
        self.spread = spread
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, check in self.checks.items():
            offset = self.rng.uniform(0, check.interval) if self.spread else 0.0
            self._tasks.append(asyncio.create_task(self._loop(name, check, offset), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, name: str, check: CheckConfig, offset: float) -> None:
        await self.clock.sleep(offset)
        next_start = self.clock.monotonic()
        while True:
            result = await run_check(check, self.ctx)
            try:
                await self.on_result(name, result)
            except Exception:
                log.exception("handling a check result failed", check=name)
            next_start += check.interval
            now = self.clock.monotonic()
            if next_start < now:  # overran: skip the missed slots, keep the phase
                missed = int((now - next_start) // check.interval) + 1
                next_start += missed * check.interval
            await self.clock.sleep(next_start - now)
