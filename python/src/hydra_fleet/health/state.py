"""Per-check state: thresholds, start-up grace, flap detection and dependency blocking.

States: `pending` (no verdict yet, or inside the start-up grace), `up`, `down`,
`flapping` (results flip too often to trust: reported, never remediated) and `blocked`
(a check it depends on is not up: no alert, no remediation for this one).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from typing import Literal

from hydra_fleet.health.config import CheckConfig, Flap

State = Literal["pending", "up", "down", "flapping", "blocked"]
STATES: tuple[State, ...] = ("pending", "up", "down", "flapping", "blocked")


@dataclasses.dataclass
class CheckState:
    name: str
    config: CheckConfig
    flap: Flap
    started_at: float
    own: State = "pending"
    effective: State = "pending"
    consecutive_failures: int = 0
    consecutive_passes: int = 0
    flapping: bool = False
    last_ok: bool | None = None
    last_detail: str = "not run yet"
    last_duration: float = 0.0
    last_run: float | None = None
    # monotonic time of the last change of `effective` (the status page's "since")
    last_change: float | None = None
    grace_until: float = 0.0
    runs: int = 0
    history: deque[bool] = dataclasses.field(default_factory=deque)

    def __post_init__(self) -> None:
        self.grace_until = self.started_at + self.config.startup_grace
        self.history = deque(maxlen=self.flap.window)

    def in_grace(self, now: float) -> bool:
        return now < self.grace_until

    def restart_grace(self, now: float) -> None:
        """After a restart the service gets its start-up grace again."""
        self.grace_until = now + self.config.startup_grace
        self.consecutive_failures = 0

    def record(self, ok: bool, detail: str, duration: float, now: float) -> None:
        """Feed one result; updates `own` (the check's state before dependencies)."""
        self.runs += 1
        self.last_ok, self.last_detail, self.last_duration, self.last_run = (
            ok,
            detail,
            duration,
            now,
        )
        self.history.append(ok)
        if ok:
            self.consecutive_passes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_passes = 0
            if not self.in_grace(now):
                self.consecutive_failures += 1
        self.flapping = self._flapping()
        if self.flapping:
            self.own = "flapping"
        elif ok and (self.consecutive_passes >= self.config.success_threshold or self.own == "up"):
            self.own = "up"
        elif self.consecutive_failures >= self.config.failure_threshold:
            self.own = "down"
        elif self.own == "flapping":
            self.own = "pending"

    def _flapping(self) -> bool:
        """Share of result changes in the window: opens at `high`, closes below `low`."""
        if len(self.history) < max(4, self.flap.window // 2):
            return False
        samples = list(self.history)
        changes = sum(1 for a, b in itertools.pairwise(samples) if a != b)
        ratio = changes / (len(samples) - 1)
        if self.flapping:
            return ratio >= self.flap.low
        return ratio >= self.flap.high


def resolve(states: dict[str, CheckState]) -> dict[str, tuple[State, State]]:
    """Set every check's `effective` state from its own and its dependencies'.

    Returns {name: (before, after)} for the checks whose effective state changed.
    """
    changed: dict[str, tuple[State, State]] = {}
    memo: dict[str, State] = {}

    def effective(name: str) -> State:
        if name in memo:
            return memo[name]
        state = states[name]
        result: State = state.own
        for dep in state.config.depends_on:
            if state.own == "up":
                break
            dep_state = effective(dep)
            # A dependency not yet known (pending) explains a failing dependant as well as a
            # down one does: blocking it then keeps it from being restarted or alerted first.
            if dep_state in ("down", "blocked") or (
                dep_state == "pending" and state.own != "pending"
            ):
                result = "blocked"
                break
        memo[name] = result
        return result

    for name, state in states.items():
        after = effective(name)
        if after != state.effective:
            changed[name] = (state.effective, after)
            state.effective = after
    return changed
