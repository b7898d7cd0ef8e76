"""Budgeted remediation: restart the unit or run the declared command.

At most `maxPerHour` attempts per service in a rolling window, exponential backoff with
jitter between attempts, then stop and escalate to a human exactly once. The attempts, the
backoff deadline and the escalation live in SQLite with wall-clock times, so an agent
restart neither resets the budget nor repeats the escalation.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Literal

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.checks.command import run_argv
from hydra_fleet.health.clock import Clock
from hydra_fleet.health.config import Budget, CheckConfig
from hydra_fleet.health.store import AsyncStore, Store

log = get_logger("hydra.health.remediation")

Outcome = Literal["restarted", "ran", "failed", "backoff", "escalated", "exhausted", "none"]
Escalate = Callable[[str, str, bool], Awaitable[None]]


def service_of(name: str, check: CheckConfig) -> str:
    """The budget key: the unit restarted, or the check's name for a command."""
    return check.restart_unit or f"check:{name}"


def backoff_delay(base: float, cap: float, attempt: int, rng: random.Random) -> float:
    """Delay after the `attempt`-th attempt (1-based): base·2^(n-1), capped, equal jitter."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


class Remediator:
    def __init__(
        self,
        store: AsyncStore,
        clock: Clock,
        budget: Budget,
        *,
        systemctl: str = "systemctl",
        escalate: Escalate,
        on_action: Callable[[str, str, str], None] = lambda service, action, result: None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.budget = budget
        self.systemctl = systemctl
        self.escalate = escalate
        self.on_action = on_action
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security

    async def remaining(self, service: str) -> int:
        since = self.clock.wall() - self.budget.window
        attempts = await self.store.call(Store.attempts_since, service, since)
        return max(0, self.budget.max_per_hour - len(attempts))

    async def on_down(self, name: str, check: CheckConfig, detail: str) -> Outcome:
        """Called for every failing result while the check is down (not blocked, not flapping)."""
        if check.remediate is None:
            return "none"
        service = service_of(name, check)
        now = self.clock.wall()
        attempts = await self.store.call(Store.attempts_since, service, now - self.budget.window)
        next_allowed, escalated_at = await self.store.call(Store.service_state, service)
        if escalated_at is not None:
            return "exhausted"
        if now < next_allowed:  # the last attempt still gets its chance, even the last one
            return "backoff"
        if len(attempts) >= self.budget.max_per_hour:
            await self.store.call(Store.set_escalated, service, now)
            log.error(
                "remediation budget exhausted, escalating",
                check=name,
                service=service,
                attempts=len(attempts),
                window_s=self.budget.window,
            )
            self.on_action(service, "escalate", "escalated")
            await self.escalate(name, service, True)
            return "escalated"
        remediate = check.remediate
        if remediate.action == "restart":
            # --no-block: a model server's restart "finishes" only when the model is loaded;
            # the start-up grace covers that, the agent does not wait for it.
            argv = [self.systemctl, "restart", service, "--no-block"]
        else:
            argv = list(remediate.command)
        try:
            code, output = await run_argv(argv, remediate.timeout)
        except TimeoutError:
            code, output = None, f"no exit within {remediate.timeout:g} s"
        ok = code == 0
        result: Outcome = (
            ("restarted" if remediate.action == "restart" else "ran") if ok else "failed"
        )
        delay = backoff_delay(
            self.budget.backoff_base, self.budget.backoff_max, len(attempts) + 1, self.rng
        )
        await self.store.call(
            Store.record_remediation,
            service,
            ts=now,
            action=remediate.action,
            result=result,
            detail=output[-200:],
            next_allowed=now + delay,
        )
        log.warning(
            "remediation",
            check=name,
            service=service,
            action=remediate.action,
            result=result,
            exit=code,
            attempt=len(attempts) + 1,
            budget=self.budget.max_per_hour,
            next_allowed_in_s=round(delay, 1),
            reason=detail,
        )
        self.on_action(service, remediate.action, result)
        return result

    async def on_recovered(self, name: str, check: CheckConfig) -> None:
        """The check is up again: reset backoff and escalation, resolve the escalation."""
        if check.remediate is None:
            return
        service = service_of(name, check)
        _, escalated_at = await self.store.call(Store.service_state, service)
        await self.store.call(Store.reset_service, service)
        if escalated_at is not None:
            log.info("recovered after escalation", check=name, service=service)
            await self.escalate(name, service, False)
