"""Prometheus metrics of the agent (prefix `hydra_health_`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hydra_fleet.health.state import STATES


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.check_up = Gauge(
            "hydra_health_check_up", "1 when the check's last result passed", ["check"], registry=r
        )
        self.check_state = Gauge(
            "hydra_health_check_state",
            "1 for the check's current state (pending, up, down, flapping, blocked)",
            ["check", "state"],
            registry=r,
        )
        self.check_duration = Histogram(
            "hydra_health_check_duration_seconds",
            "How long each check run took",
            ["check"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.check_runs = Counter(
            "hydra_health_check_runs_total", "Check runs by result", ["check", "result"], registry=r
        )
        self.remediations = Counter(
            "hydra_health_remediations_total",
            "Remediation actions by service, action and result",
            ["service", "action", "result"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "hydra_health_remediation_budget_remaining",
            "Remediations left for the service in the rolling window",
            ["service"],
            registry=r,
        )
        self.deliveries = Counter(
            "hydra_health_alert_deliveries_total",
            "Alert delivery attempts by sink and result",
            ["sink", "result"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "hydra_health_outbox_pending", "Undelivered alerts per sink", ["sink"], registry=r
        )
        self.outbox_oldest = Gauge(
            "hydra_health_outbox_oldest_age_seconds",
            "Age of the oldest undelivered alert per sink",
            ["sink"],
            registry=r,
        )

        self.store_writable = Gauge(
            "hydra_health_store_writable",
            "1 while the state database accepts writes; 0 while alerts are held in memory",
            registry=r,
        )
        self.store_writable.set(1)
        self.store_write_errors = Counter(
            "hydra_health_store_write_errors_total",
            "Writes to the state database that failed (a full disk, an I/O error)",
            registry=r,
        )
        self.outbox_held = Gauge(
            "hydra_health_outbox_held",
            "Alerts held in memory because the state database did not accept them yet",
            registry=r,
        )
        self.degraded = Gauge(
            "hydra_health_agent_degraded",
            "1 while the agent cannot run its checks (out of descriptors): results are ignored",
            registry=r,
        )

    def set_state(self, check: str, state: str) -> None:
        for s in STATES:
            self.check_state.labels(check=check, state=s).set(1 if s == state else 0)
