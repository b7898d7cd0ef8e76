"""The agent's configuration: `--config FILE` (JSON written by the NixOS module)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra_fleet.core.config import (
    FieldProblem,
    Host,
    HttpUrl,
    Port,
    Secret,
    in_range,
    load,
    non_empty,
    url_problem,
)

CheckType = Literal["http", "tcp", "systemd", "gpu", "command"]
WEEK = 7 * 24 * 3600.0
Seconds = Annotated[float, in_range(0.001, WEEK)]
NonNegative = Annotated[float, in_range(0, WEEK)]
Count = Annotated[int, in_range(1, 1000)]


@dataclasses.dataclass(frozen=True)
class Remediate:
    """What to do when a check is down: restart `unit` with systemctl, or run `command`."""

    action: Literal["restart", "command"] = "restart"
    unit: str | None = None
    command: list[str] = field(default_factory=list)
    timeout: Seconds = 90.0

    def __post_init__(self) -> None:
        if self.action == "command" and not self.command:
            raise FieldProblem("command", 'expected a non-empty argv list for action "command"')


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    type: CheckType
    url: HttpUrl | None = None
    host: Host | None = None
    port: Port | None = None
    unit: str | None = None
    command: list[str] = field(default_factory=list)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    json_body: Any = None
    expect_status: list[int] = field(default_factory=list)
    body_match: str | None = None
    interval: Seconds = 15.0
    timeout: Seconds = 5.0
    connect_timeout: Seconds = 2.0
    failure_threshold: Count = 3
    success_threshold: Count = 2
    startup_grace: NonNegative = 0.0
    depends_on: list[str] = field(default_factory=list)
    remediate: Remediate | None = None

    def __post_init__(self) -> None:
        if self.type in ("http", "gpu") and not self.url:
            raise FieldProblem("url", f'missing; a "{self.type}" check needs a URL')
        if self.type == "tcp" and (not self.host or self.port is None):
            raise FieldProblem("host", 'a "tcp" check needs "host" and "port"')
        if self.type == "systemd" and not self.unit:
            raise FieldProblem("unit", 'missing; a "systemd" check needs the unit name')
        if self.type == "command" and not self.command:
            raise FieldProblem("command", 'missing; a "command" check needs an argv list')
        if self.connect_timeout > self.timeout:
            raise FieldProblem("connectTimeout", "expected a value no larger than timeout")
        if self.timeout > self.interval:
            raise FieldProblem("timeout", "expected a value no larger than interval")
        if self.body_match is not None:
            try:
                re.compile(self.body_match)
            except re.error as err:
                raise FieldProblem("bodyMatch", f"not a valid regular expression: {err}") from None
        if (
            self.remediate is not None
            and self.remediate.action == "restart"
            and not (self.remediate.unit or self.unit)
        ):
            raise FieldProblem("remediate.unit", "a restart needs the unit (here or in the check)")

    @property
    def restart_unit(self) -> str | None:
        if self.remediate is None or self.remediate.action != "restart":
            return None
        return self.remediate.unit or self.unit

    def status_ok(self, status: int) -> bool:
        return status in self.expect_status if self.expect_status else 200 <= status < 400


@dataclasses.dataclass(frozen=True)
class Budget:
    max_per_hour: Annotated[int, in_range(0, 100)] = 3
    window: Seconds = 3600.0
    backoff_base: NonNegative = 30.0
    backoff_max: NonNegative = 900.0


@dataclasses.dataclass(frozen=True)
class Flap:
    window: Annotated[int, in_range(4, 100)] = 20
    high: Annotated[float, in_range(0.01, 1)] = 0.5
    low: Annotated[float, in_range(0, 1)] = 0.25


@dataclasses.dataclass(frozen=True)
class AlertmanagerSink:
    url: HttpUrl
    resend_interval: Seconds = 60.0


@dataclasses.dataclass(frozen=True)
class NtfySink:
    url: HttpUrl
    topic: Annotated[str, non_empty]
    token_file: Secret | None = None


@dataclasses.dataclass(frozen=True)
class WebhookSink:
    url: HttpUrl
    headers_file: Secret | None = None

    def headers(self) -> dict[str, str]:
        """`Name: value` lines from `headersFile` (e.g. an Authorization header)."""
        result: dict[str, str] = {}
        if self.headers_file is None:
            return result
        for line in self.headers_file.value.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                result[name.strip()] = value.strip()
        return result


def _redis_url(value: str) -> str | None:
    if value.startswith("unix://") and len(value) > len("unix://"):
        return None
    return url_problem(value, ("redis", "rediss"))


@dataclasses.dataclass(frozen=True)
class RedisSink:
    url: Annotated[str, _redis_url]
    stream: Annotated[str, non_empty] = "hydra:alerts"
    password_file: Secret | None = None
    max_len: Annotated[int, in_range(1, 10_000_000)] = 10000


@dataclasses.dataclass(frozen=True)
class Sinks:
    alertmanager: AlertmanagerSink | None = None
    ntfy: NtfySink | None = None
    webhook: WebhookSink | None = None
    redis: RedisSink | None = None

    def names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclasses.dataclass(frozen=True)
class Alerts:
    sinks: Sinks = field(default_factory=Sinks)
    retry_base: Seconds = 1.0
    retry_max: Seconds = 300.0
    send_timeout: Seconds = 10.0


@dataclasses.dataclass(frozen=True)
class Gate:
    passes: Count = 3
    timeout: Seconds = 300.0


@dataclasses.dataclass(frozen=True)
class FleetMember:
    """One agent shown on the fleet page (`/fleet`): its host name and base URL."""

    name: Annotated[str, non_empty]
    url: Annotated[str, non_empty]

    def __post_init__(self) -> None:
        if not re.match(r"https?://", self.url):
            raise FieldProblem("url", f"expected an http:// or https:// URL, got {self.url!r}")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    listen_address: Host = "127.0.0.1"
    port: Port = 9446
    state_dir: Path = Path("/var/lib/hydra-health")
    systemctl: str = "systemctl"
    host_name: Host | None = None
    checks: dict[str, CheckConfig] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    flap: Flap = field(default_factory=Flap)
    alerts: Alerts = field(default_factory=Alerts)
    gate: Gate = field(default_factory=Gate)
    # The operator's view (health/overview.py): the local exporter's base URL for the GPU
    # table (default: the URL of the first `gpu` check), the engine instances of this host
    # (name -> launcher config, as the inference module writes them) and the fleet page.
    exporter_url: str | None = None
    instances_file: Path | None = None
    fleet: list[FleetMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, check in self.checks.items():
            for dep in check.depends_on:
                if dep not in self.checks:
                    raise FieldProblem(
                        f"checks.{name}.dependsOn",
                        f"unknown check {dep!r}; known: " + ", ".join(sorted(self.checks)),
                    )
        cycle = _find_cycle({n: c.depends_on for n, c in self.checks.items()})
        if cycle:
            raise FieldProblem("checks", "dependsOn forms a cycle: " + " -> ".join(cycle))


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        if state.get(node) == 1:
            return [*path[path.index(node) :], node]
        if state.get(node) == 2:
            return None
        state[node] = 1
        for dep in graph.get(node, []):
            found = visit(dep, [*path, node])
            if found:
                return found
        state[node] = 2
        return None

    for node in graph:
        found = visit(node, [])
        if found:
            return found
    return None


def load_config(
    file: Path | None, overrides: dict[str, object] | None = None, *, read_secrets: bool = True
) -> HealthConfig:
    return load(HealthConfig, file, overrides, read_secrets=read_secrets)
