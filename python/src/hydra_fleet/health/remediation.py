"""Budgeted remediation: restart the unit or run the declared command.

At most `maxPerHour` attempts per service in a rolling window, exponential backoff with
jitter between attempts, then stop and escalate to a human exactly once. The attempts, the
backoff deadline and the escalation live in SQLite with wall-clock times, so an agent
restart neither resets the budget nor repeats the escalation.

The attempt is charged to the budget *before* the action, and no action is taken when the
charge cannot be stored (a full disk): a store that cannot count can never let the agent
restart a service beyond its budget. A backoff deadline further ahead than `backoffMax`
(the wall clock went back) does not hold the service.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Literal

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.checks.command import run_argv
from hydra_fleet.health.clock import Clock
from hydra_fleet.health.config import Budget, CheckConfig, Remediate
from hydra_fleet.health.store import AsyncStore, Store, is_write_failure

log = get_logger("hydra.health.remediation")

Outcome = Literal[
    "restarted", "ran", "failed", "backoff", "escalated", "exhausted", "unrecorded", "none"
]
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
        self._escalated: set[str] = set()  # escalations the store could not record

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
        failure: Exception | None = None
        attempts: list[float] = []
        next_allowed, escalated_at = 0.0, None
        try:
            attempts = await self.store.call(
                Store.attempts_since, service, now - self.budget.window
            )
            next_allowed, escalated_at = await self.store.call(Store.service_state, service)
        except Exception as err:
            if not is_write_failure(err):
                raise
            failure = err
        if failure is not None:
            log.error("remediation skipped: cannot read the budget", service=service, error=failure)
            return "unrecorded"
        if escalated_at is not None or service in self._escalated:
            return "exhausted"
        # the last attempt still gets its chance, even the last one; a deadline beyond
        # backoffMax from now is a clock that went back, not a backoff
        if now < next_allowed <= now + self.budget.backoff_max:
            return "backoff"
        if len(attempts) >= self.budget.max_per_hour:
            await self._escalate(name, service, now, len(attempts))
            return "escalated"
        return await self._act(
            name, service, check.remediate, now=now, attempt=len(attempts) + 1, detail=detail
        )

    async def _escalate(self, name: str, service: str, now: float, attempts: int) -> None:
        try:
            await self.store.call(Store.set_escalated, service, now)
        except Exception as err:
            if not is_write_failure(err):
                raise
            self._escalated.add(service)  # escalate once all the same
        log.error(
            "remediation budget exhausted, escalating",
            check=name,
            service=service,
            attempts=attempts,
            window_s=self.budget.window,
        )
        self.on_action(service, "escalate", "escalated")
        await self.escalate(name, service, True)

    async def _charge(self, service: str, action: str, now: float, attempt: int) -> int | None:
        """Charge the attempt before acting: its row id, or None when it cannot be stored."""
        delay = backoff_delay(self.budget.backoff_base, self.budget.backoff_max, attempt, self.rng)
        try:
            return await self.store.call(
                Store.record_remediation,
                service,
                ts=now,
                action=action,
                result="started",
                detail="",
                next_allowed=now + delay,
            )
        except Exception as err:
            if not is_write_failure(err):
                raise
            failure = f"{type(err).__name__}: {err}"
        log.error(
            "remediation skipped: the budget charge cannot be stored",
            service=service,
            error=failure,
        )
        return None

    async def _act(
        self,
        name: str,
        service: str,
        remediate: Remediate,
        *,
        now: float,
        attempt: int,
        detail: str,
    ) -> Outcome:
        row = await self._charge(service, remediate.action, now, attempt)
        if row is None:
            self.on_action(service, remediate.action, "unrecorded")
            return "unrecorded"
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
        except OSError as err:
            code, output = None, f"cannot run {argv[0]}: {err.strerror or err}"
        ok = code == 0
        result: Outcome = (
            ("restarted" if remediate.action == "restart" else "ran") if ok else "failed"
        )
        try:
            await self.store.call(
                Store.finish_remediation, row, result=result, detail=output[-200:]
            )
        except Exception as err:  # noqa: BLE001 - the charge is stored; only the note is lost
            log.warning("cannot store the remediation result", service=service, error=str(err))
        log.log(
            logging.WARNING if ok else logging.ERROR,
            "remediation",
            check=name,
            service=service,
            action=remediate.action,
            result=result,
            exit=code,
            attempt=attempt,
            budget=self.budget.max_per_hour,
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
        was_escalated = escalated_at is not None or service in self._escalated
        self._escalated.discard(service)
        try:
            await self.store.call(Store.reset_service, service)
        except Exception as err:
            if not is_write_failure(err):
                raise
            log.warning("cannot store the backoff reset", service=service, error=str(err))
        if was_escalated:
            log.info("recovered after escalation", check=name, service=service)
            await self.escalate(name, service, False)
