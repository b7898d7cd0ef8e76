"""An injectable clock: monotonic time for deadlines, wall time for what must survive a restart.

The agent never calls `time` or `asyncio.sleep` directly, so tests can run an hour-long
remediation budget in milliseconds with `FakeClock`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Time moves only when told (`advance`) or when a sleeper is woken by an advance."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self._mono = 1000.0
        self._offset = wall - self._mono
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._offset

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + max(0.0, seconds), future))
        await future

    def jump(self, seconds: float) -> None:
        """Step the wall clock only (NTP fixing a wrong clock, `date -s`); monotonic time
        and the sleepers are unaffected."""
        self._offset += seconds

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._mono]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._mono]
        for _, future in due:
            if not future.done():
                future.set_result(None)
