"""The daemon's core: check results -> state -> alerts and remediation.

A result the agent could not produce (it ran out of descriptors) is not a verdict on the
service: it changes no state, charges no budget, and makes the agent report itself degraded
(/healthz 503, `hydra_health_agent_degraded`). A failing check logs its first failure and
its state change, then a reminder at most every `REMINDER_INTERVAL` seconds.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp

from hydra_fleet.core.log import get_logger
from hydra_fleet.health.alerts.outbox import Outbox, make_sinks
from hydra_fleet.health.checks import CheckContext, CheckResult
from hydra_fleet.health.clock import Clock, SystemClock
from hydra_fleet.health.config import CheckConfig, HealthConfig
from hydra_fleet.health.metrics import Metrics
from hydra_fleet.health.remediation import Remediator, service_of
from hydra_fleet.health.scheduler import Scheduler
from hydra_fleet.health.state import CheckState, resolve
from hydra_fleet.health.store import AsyncStore, Store, is_write_failure

log = get_logger("hydra.health")

DB_NAME = "health.sqlite3"
REMINDER_INTERVAL = 300.0


class Agent:
    def __init__(self, config: HealthConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.host = config.host_name or socket.gethostname()
        self.status_url = status_url(config.listen_address, config.port, self.host)
        self.metrics = Metrics()
        now = self.clock.monotonic()
        self.states = {
            name: CheckState(name, check, config.flap, now) for name, check in config.checks.items()
        }
        for name in self.states:
            self.metrics.set_state(name, "pending")
        self.store: AsyncStore | None = None
        self.ctx: CheckContext | None = None
        self.outbox: Outbox | None = None
        self.remediator: Remediator | None = None
        self.scheduler: Scheduler | None = None
        self._alert_session: aiohttp.ClientSession | None = None
        self.started_at = now
        self.last_result_at: float | None = None
        self.degraded: dict[str, str] = {}  # check -> why the agent could not run it
        self._reminded: dict[str, float] = {}  # check -> when its failure was last logged

    async def start(self, *, spread: bool = True) -> None:
        self.store = AsyncStore(self.config.state_dir / DB_NAME)
        self.ctx = CheckContext.create(self.config.systemctl)
        self._alert_session = aiohttp.ClientSession()
        sinks = make_sinks(self.config.alerts, self._alert_session, self.clock, self.status_url)
        self.outbox = Outbox(
            self.store,
            self.clock,
            self.config.alerts,
            sinks,
            on_delivery=lambda sink, ok: self.metrics.deliveries.labels(
                sink=sink, result="ok" if ok else "error"
            ).inc(),
            on_store_error=lambda error: self.metrics.store_write_errors.inc(),
        )
        self.remediator = Remediator(
            self.store,
            self.clock,
            self.config.budget,
            systemctl=self.config.systemctl,
            escalate=self._escalate,
            on_action=lambda service, action, result: self.metrics.remediations.labels(
                service=service, action=action, result=result
            ).inc(),
        )
        for name, check in self.config.checks.items():
            await self._refresh_budget(name, check)
        reset_labels = self._labels("HydraHealthStateReset", "", "warning")
        del reset_labels["check"]
        moved = self.store.sync.reset_from
        if moved is not None:
            log.error("state database was corrupt; moved aside, started afresh", moved_to=moved)
            await self.outbox.fire(
                reset_labels,
                {
                    "summary": f"the health agent on {self.host} found its state database "
                    "corrupt and started a fresh one",
                    "description": f"The old database is kept at {moved}. The remediation "
                    "budgets and undelivered alerts it held are lost.",
                },
            )
        else:
            await self.outbox.resolve(reset_labels, {"summary": "state database healthy"})
        for alert in await self.store.call(Store.firing):
            if "check" in alert.labels and alert.labels["check"] not in self.states:
                # its check was removed from the configuration: nothing will ever resolve it
                await self.outbox.resolve(alert.labels, alert.annotations)
        self.outbox.start()
        self.scheduler = Scheduler(
            self.config.checks, self.ctx, self.clock, self.on_result, spread=spread
        )
        self.scheduler.start()
        log.info(
            "agent started",
            checks=len(self.config.checks),
            sinks=",".join(self.outbox.sink_names) or "none",
        )

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.ctx is not None:
            await self.ctx.close()
        if self._alert_session is not None:
            await self._alert_session.close()
        if self.store is not None:
            self.store.close()

    def _labels(self, alertname: str, check: str, severity: str) -> dict[str, str]:
        return {"alertname": alertname, "check": check, "host": self.host, "severity": severity}

    async def _escalate(self, check: str, service: str, firing: bool) -> None:
        assert self.outbox is not None
        labels = self._labels("HydraRemediationExhausted", check, "critical")
        labels["service"] = service
        budget = self.config.budget
        annotations = {
            "summary": f"{service} on {self.host} is still failing after "
            f"{budget.max_per_hour} remediations; the agent has stopped acting",
            "description": f"Check {check!r}: {self.states[check].last_detail}. "
            f"Investigate {service}; the agent resumes once the check passes again.",
        }
        if firing:
            await self.outbox.fire(labels, annotations)
        else:
            await self.outbox.resolve(labels, annotations)

    async def _refresh_budget(self, name: str, check: CheckConfig) -> None:
        if check.remediate is None or self.remediator is None:
            return
        service = service_of(name, check)
        try:
            remaining = await self.remediator.remaining(service)
        except Exception as err:
            if not is_write_failure(err):
                raise
            return
        self.metrics.budget_remaining.labels(service=service).set(remaining)

    def _degrade(self, name: str, result: CheckResult) -> None:
        if name not in self.degraded:
            log.error(
                "agent degraded: cannot run the check; its result is ignored",
                check=name,
                detail=result.detail,
            )
        self.degraded[name] = result.detail
        self.metrics.degraded.set(1)

    def _log_failure(self, name: str, state: CheckState, result: CheckResult, now: float) -> None:
        """The first failure, then a reminder at most every REMINDER_INTERVAL seconds."""
        if result.ok:
            self._reminded.pop(name, None)
            return
        last = self._reminded.get(name)
        if last is None:
            log.info("check failed", check=name, detail=result.detail, state=state.own)
        elif now - last >= REMINDER_INTERVAL:
            log.warning(
                "check still failing",
                check=name,
                detail=result.detail,
                state=state.effective,
                failures=state.consecutive_failures,
            )
        else:
            return
        self._reminded[name] = now

    async def on_result(self, name: str, result: CheckResult) -> None:
        assert self.outbox is not None
        assert self.remediator is not None
        state = self.states[name]
        now = self.clock.monotonic()
        self.last_result_at = now
        if result.inconclusive:
            self._degrade(name, result)
            return
        if self.degraded.pop(name, None) is not None:
            log.info("agent can run the check again", check=name)
            self.metrics.degraded.set(1 if self.degraded else 0)
        state.record(result.ok, result.detail, result.duration, now)
        self.metrics.check_up.labels(check=name).set(1 if result.ok else 0)
        self.metrics.check_duration.labels(check=name).observe(result.duration)
        self.metrics.check_runs.labels(check=name, result="pass" if result.ok else "fail").inc()
        self._log_failure(name, state, result, now)
        for changed, (before, after) in resolve(self.states).items():
            self.states[changed].last_change = now
            await self._transition(changed, before, after)
        if state.effective == "down" and not result.ok:
            outcome = await self.remediator.on_down(name, state.config, result.detail)
            if outcome in ("restarted", "ran"):
                state.restart_grace(self.clock.monotonic())
        # every result: the gauge is current after a recovery too, not only on failures
        await self._refresh_budget(name, state.config)

    async def _transition(self, name: str, before: str, after: str) -> None:
        assert self.outbox is not None
        assert self.remediator is not None
        state = self.states[name]
        self.metrics.set_state(name, after)
        log.log(
            logging.WARNING if after in ("down", "flapping") else logging.INFO,
            "check state",
            check=name,
            before=before,
            after=after,
            detail=state.last_detail,
        )
        down = self._labels("HydraCheckDown", name, "warning")
        flapping = self._labels("HydraCheckFlapping", name, "warning")
        notes = {
            "summary": f"check {name} on {self.host} is {after}",
            "description": f"{name} ({state.config.type}): {state.last_detail}",
        }
        if after == "down":
            await self.outbox.fire(down, notes)
        elif after == "flapping":
            await self.outbox.fire(flapping, notes)
        if before == "flapping" and after != "flapping":
            await self.outbox.resolve(flapping, notes)
        if after == "up":
            await self.outbox.resolve(down, notes)
            await self.remediator.on_recovered(name, state.config)

    async def refresh_outbox_metrics(self) -> None:
        assert self.store is not None
        if self.outbox is not None:
            self.metrics.store_writable.set(0 if self.outbox.store_error else 1)
            self.metrics.outbox_held.set(len(self.outbox.unsaved))
        stats = await self.store.call(Store.outbox_stats, self.clock.wall())
        for sink in self.outbox.sink_names if self.outbox else []:
            pending, age = stats.get(sink, (0, 0.0))
            self.metrics.outbox_pending.labels(sink=sink).set(pending)
            self.metrics.outbox_oldest.labels(sink=sink).set(age)

    def alive(self) -> tuple[bool, str]:
        """Whether the agent keeps its promises: the state store accepts writes, it can run
        its checks, and they are still being run (some result within two of the longest
        interval plus its deadline: a wedged scheduler makes /healthz fail)."""
        if self.outbox is not None and self.outbox.store_error is not None:
            held = len(self.outbox.unsaved)
            return False, (
                f"store not writable: {self.outbox.store_error}; {held} alerts held in memory"
            )
        if self.degraded:
            names = ", ".join(sorted(self.degraded))
            detail = next(iter(self.degraded.values()))
            return False, f"degraded: cannot run checks {names} ({detail})"
        if not self.config.checks:
            return True, "no checks configured"
        slowest = max(c.interval + c.timeout for c in self.config.checks.values())
        now = self.clock.monotonic()
        since = now - (self.last_result_at if self.last_result_at is not None else self.started_at)
        if since > 2 * slowest:
            return False, f"stalled: no check result for {since:.0f} s"
        return True, "checks running"

    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        checks = {}
        for name, s in self.states.items():
            checks[name] = {
                "type": s.config.type,
                "state": s.effective,
                "ownState": s.own,
                "lastOk": s.last_ok,
                "detail": s.last_detail,
                "durationSeconds": round(s.last_duration, 4),
                "lastRunAgoSeconds": None if s.last_run is None else round(now - s.last_run, 3),
                "consecutiveFailures": s.consecutive_failures,
                "consecutivePasses": s.consecutive_passes,
                "inGrace": s.in_grace(now),
                "dependsOn": list(s.config.depends_on),
                "runs": s.runs,
            }
        healthy = all(s.effective == "up" for s in self.states.values())
        return {"host": self.host, "healthy": healthy, "checks": checks}


def status_url(listen_address: str, port: int, host: str) -> str:
    """The agent's status page as others reach it: a wildcard listener by the host's name."""
    if listen_address in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - compared, not bound
        listen_address = host
    if ":" in listen_address and not listen_address.startswith("["):
        listen_address = f"[{listen_address}]"
    return f"http://{listen_address}:{port}/"
