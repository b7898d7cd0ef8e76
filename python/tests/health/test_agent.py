"""The agent end to end in-process: real checks, a stand-in systemctl, a real webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from hydra_fleet.health.agent import Agent, status_url
from hydra_fleet.health.app import make_app
from hydra_fleet.health.checks import CheckResult
from hydra_fleet.health.clock import FakeClock
from hydra_fleet.health.config import HealthConfig, load_config
from tests.health.receivers import Receiver
from tests.health.servers import http_server, status_app


async def wait_for(predicate: Callable[[], object], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def config(tmp_path: Path, data: dict[str, Any]) -> HealthConfig:
    import json  # noqa: PLC0415

    file = tmp_path / "health.json"
    file.write_text(json.dumps({"stateDir": str(tmp_path / "state"), "hostName": "h", **data}))
    return load_config(file)


@contextlib.asynccontextmanager
async def running(cfg: HealthConfig) -> AsyncIterator[Agent]:
    agent = Agent(cfg)
    await agent.start(spread=False)
    try:
        yield agent
    finally:
        await agent.stop()


def unit_check(unit: str, **kw: object) -> dict[str, object]:
    return {
        "type": "systemd",
        "unit": unit,
        "interval": 0.1,
        "timeout": 0.1,
        "connectTimeout": 0.1,
        "failureThreshold": 2,
        "successThreshold": 1,
        "remediate": {"action": "restart"},
        **kw,
    }


async def test_stopped_unit_is_restarted_and_alerts_fire_and_resolve(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, state, log = fake_systemctl
    (state / "llm.service").write_text("inactive\n")
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        cfg = config(
            tmp_path,
            {
                "systemctl": str(script),
                "checks": {"llm": unit_check("llm.service")},
                "budget": {"backoffBase": 0.05, "backoffMax": 0.1},
                "alerts": {"sinks": {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}}},
            },
        )
        async with running(cfg) as agent:
            await wait_for(lambda: agent.states["llm"].effective == "up")
            await wait_for(lambda: len(receiver.webhook) == 2)
    assert "restart llm.service" in log.read_text()
    assert [(a["labels"]["alertname"], a["status"]) for a in receiver.webhook] == [
        ("HydraCheckDown", "firing"),
        ("HydraCheckDown", "resolved"),
    ]


async def test_broken_unit_gets_three_restarts_then_exactly_one_escalation(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, state, log = fake_systemctl
    (state / "bad.service").write_text("failed\n")
    (state / "bad.service.after-restart").write_text("failed\n")
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        cfg = config(
            tmp_path,
            {
                "systemctl": str(script),
                "checks": {"bad": unit_check("bad.service")},
                "budget": {"backoffBase": 0.05, "backoffMax": 0.1},
                "alerts": {"sinks": {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}}},
            },
        )
        async with running(cfg) as agent:
            await wait_for(
                lambda: any(
                    a["labels"]["alertname"] == "HydraRemediationExhausted"
                    for a in receiver.webhook
                )
            )
            await asyncio.sleep(1.0)  # ten more failing rounds: no more restarts, no more pages
            metrics = agent.metrics
    restarts = [line for line in log.read_text().splitlines() if line.startswith("restart")]
    assert restarts == ["restart bad.service --no-block"] * 3
    names = [a["labels"]["alertname"] for a in receiver.webhook]
    assert names.count("HydraRemediationExhausted") == 1
    assert names.count("HydraCheckDown") == 1
    exhausted = next(a for a in receiver.webhook if a["labels"]["alertname"].endswith("Exhausted"))
    assert exhausted["labels"]["severity"] == "critical"
    assert exhausted["labels"]["service"] == "bad.service"
    value = metrics.registry.get_sample_value(
        "hydra_health_remediations_total",
        {"service": "bad.service", "action": "restart", "result": "restarted"},
    )
    assert value == 3


async def test_dependency_down_blocks_dependant_no_restart_no_alert(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, state, log = fake_systemctl
    (state / "gpu.service").write_text("failed\n")
    (state / "gpu.service.after-restart").write_text("failed\n")
    (state / "llm.service").write_text("failed\n")
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        cfg = config(
            tmp_path,
            {
                "systemctl": str(script),
                "checks": {
                    "gpu": unit_check("gpu.service", remediate=None),
                    "llm": unit_check("llm.service", dependsOn=["gpu"]),
                },
                "alerts": {"sinks": {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}}},
            },
        )
        async with running(cfg) as agent:
            await wait_for(lambda: agent.states["llm"].effective == "blocked")
            await asyncio.sleep(0.6)
            assert agent.states["gpu"].effective == "down"
            assert agent.states["llm"].effective == "blocked"
            await wait_for(lambda: len(receiver.webhook) >= 1)
            await asyncio.sleep(0.3)
    assert "restart" not in log.read_text()
    assert [a["labels"]["check"] for a in receiver.webhook] == ["gpu"]


async def test_a_hung_check_does_not_delay_another(tmp_path: Path) -> None:
    async with http_server(status_app()) as port:
        base = f"http://127.0.0.1:{port}"
        http = {"type": "http", "interval": 0.1, "timeout": 0.1, "connectTimeout": 0.1}
        hang = {**http, "url": f"{base}/hang", "interval": 2.0, "timeout": 2.0}
        cfg = config(tmp_path, {"checks": {"hang": hang, "fast": {**http, "url": f"{base}/ok"}}})
        async with running(cfg) as agent:
            await asyncio.sleep(1.5)
            fast_runs = agent.states["fast"].runs
            hang_runs = agent.states["hang"].runs
    assert hang_runs == 0  # still waiting on its first answer
    assert fast_runs >= 5  # ~15 slots in 1.5 s; a busy CI box may skip some


async def test_status_and_metrics_endpoints(tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    async with http_server(status_app()) as port:
        checks = {
            "ok": {
                "type": "http",
                "url": f"http://127.0.0.1:{port}/ok",
                "interval": 0.1,
                "timeout": 0.1,
                "connectTimeout": 0.1,
                "successThreshold": 1,
            }
        }
        async with running(config(tmp_path, {"checks": checks})) as agent:
            client = await aiohttp_client(make_app(agent))
            await wait_for(lambda: agent.states["ok"].effective == "up")
            status = await (await client.get("/status")).json()
            metrics = await (await client.get("/metrics")).text()
            healthz = await client.get("/healthz")
    assert status["healthy"] is True
    assert status["checks"]["ok"]["state"] == "up"
    assert status["checks"]["ok"]["detail"] == "HTTP 200"
    assert 'hydra_health_check_state{check="ok",state="up"} 1.0' in metrics
    assert 'hydra_health_check_up{check="ok"} 1.0' in metrics
    assert healthz.status == 200


async def test_healthz_fails_when_no_check_has_run_for_too_long(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    from hydra_fleet.health.clock import FakeClock  # noqa: PLC0415

    clock = FakeClock()
    check = {"type": "tcp", "host": "127.0.0.1", "port": 9, "interval": 10, "timeout": 2}
    agent = Agent(config(tmp_path, {"checks": {"c": check}}), clock=clock)
    client = await aiohttp_client(make_app(agent))  # the scheduler is not started
    assert (await client.get("/healthz")).status == 200
    clock.advance(25)
    response = await client.get("/healthz")
    assert response.status == 503
    assert await response.text() == "stalled: no check result for 25 s\n"


async def test_alerts_of_removed_checks_are_resolved_at_start(tmp_path: Path) -> None:
    from hydra_fleet.health.alerts.outbox import fingerprint  # noqa: PLC0415
    from hydra_fleet.health.store import Store  # noqa: PLC0415

    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        sinks = {"sinks": {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}}}
        cfg = config(tmp_path, {"alerts": sinks})
        store = Store(cfg.state_dir / "health.sqlite3")
        gone = {"alertname": "HydraCheckDown", "check": "gone"}
        store.enqueue(
            dedup_key="old",
            fingerprint=fingerprint(gone),
            status="firing",
            labels=gone,
            annotations={},
            starts_at=1.0,
            ends_at=None,
            now=1.0,
            sinks=["webhook"],
        )
        store.close()
        async with running(cfg):
            await wait_for(lambda: len(receiver.webhook) == 2)
    assert [a["status"] for a in receiver.webhook] == ["firing", "resolved"]


async def test_flapping_check_is_reported_and_no_longer_remediated(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, _, log = fake_systemctl
    toggle = tmp_path / "toggle"
    flip = f"if [ -f {toggle} ]; then rm {toggle}; exit 1; else touch {toggle}; exit 0; fi"
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        cfg = config(
            tmp_path,
            {
                "systemctl": str(script),
                "checks": {
                    "flaky": {
                        "type": "command",
                        "command": ["sh", "-c", flip],
                        "unit": "flaky.service",
                        "interval": 0.05,
                        "timeout": 0.05,
                        "connectTimeout": 0.05,
                        "failureThreshold": 1,
                        "successThreshold": 1,
                        "remediate": {"action": "restart"},
                    }
                },
                # without flap detection every failure would be restarted
                "budget": {"maxPerHour": 100, "backoffBase": 0, "backoffMax": 0},
                "alerts": {"sinks": {"webhook": {"url": f"http://127.0.0.1:{port}/hook"}}},
            },
        )
        async with running(cfg) as agent:
            await wait_for(lambda: agent.states["flaky"].effective == "flapping")
            before = log.read_text().count("restart")
            await wait_for(lambda: agent.states["flaky"].runs >= 40)
            after = log.read_text().count("restart")
            await wait_for(
                lambda: any(
                    a["labels"]["alertname"] == "HydraCheckFlapping" for a in receiver.webhook
                )
            )
    assert before <= 6  # only the failures before the window filled up
    assert after == before


def _result(ok: bool, detail: str = "x", *, inconclusive: bool = False) -> CheckResult:
    return CheckResult(ok, detail, 0.01, inconclusive=inconclusive)


def _gauge(agent: Agent, name: str, **labels: str) -> float | None:
    return agent.metrics.registry.get_sample_value(name, labels)


def _budget(agent: Agent) -> float | None:
    return _gauge(agent, "hydra_health_remediation_budget_remaining", service="llm.service")


async def test_budget_gauge_is_current_after_recovery(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    """Spent budget shows 0; an hour later, with the check passing, it shows 3 again (it
    used to stay 0, firing "a human is needed" until the next failure)."""
    systemctl, units, _ = fake_systemctl
    (units / "llm.service.after-restart").write_text("failed\n")
    clock = FakeClock()
    cfg = config(
        tmp_path,
        {
            "systemctl": str(systemctl),
            "checks": {"llm": unit_check("llm.service", failureThreshold=1)},
            "budget": {"maxPerHour": 3, "backoffBase": 0, "backoffMax": 0},
        },
    )
    agent = Agent(cfg, clock=clock)
    await agent.start(spread=False)
    try:
        for _ in range(3):
            await agent.on_result("llm", _result(False))
        assert _budget(agent) == 0
        await agent.on_result("llm", _result(True))
        clock.advance(3601)
        await agent.on_result("llm", _result(True))
        assert _budget(agent) == 3
    finally:
        await agent.stop()


async def test_out_of_descriptors_degrades_the_agent_not_the_service(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path], aiohttp_client: AiohttpClient
) -> None:
    """An inconclusive result changes no state, charges no budget, restarts nothing, and
    /healthz says the agent itself is degraded until it can run the check again."""
    systemctl, _, log = fake_systemctl
    clock = FakeClock()
    cfg = config(
        tmp_path,
        {
            "systemctl": str(systemctl),
            "checks": {"llm": unit_check("llm.service", failureThreshold=1)},
        },
    )
    agent = Agent(cfg, clock=clock)
    await agent.start(spread=False)
    client = await aiohttp_client(make_app(agent))
    try:
        await agent.on_result("llm", _result(True))
        assert agent.states["llm"].effective == "up"
        for _ in range(5):
            await agent.on_result(
                "llm", _result(False, "agent: Too many open files", inconclusive=True)
            )
        assert agent.states["llm"].effective == "up"
        assert not log.exists() or "restart" not in log.read_text()
        response = await client.get("/healthz")
        assert response.status == 503
        assert "degraded" in await response.text()
        assert _gauge(agent, "hydra_health_agent_degraded") == 1
        assert _budget(agent) == 3
        await agent.on_result("llm", _result(True))
        assert (await client.get("/healthz")).status == 200
        assert _gauge(agent, "hydra_health_agent_degraded") == 0
    finally:
        await agent.stop()


async def test_a_failing_check_logs_its_change_then_reminders_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    cfg = config(tmp_path, {"checks": {"db": {"type": "tcp", "host": "127.0.0.1", "port": 9}}})
    agent = Agent(cfg, clock=clock)
    await agent.start(spread=False)
    caplog.set_level(logging.INFO)
    try:
        for _ in range(60):  # 60 failing runs, 15 s apart: 15 minutes
            await agent.on_result("db", _result(False, "refused"))
            clock.advance(15)
    finally:
        await agent.stop()
    events = [r.getMessage() for r in caplog.records if r.name == "hydra.health"]
    assert events.count("check failed") == 1
    assert events.count("check state") == 1  # pending -> down
    assert 2 <= events.count("check still failing") <= 3  # every 5 minutes, not every run
    down = [r for r in caplog.records if r.getMessage() == "check state"]
    assert down[0].levelno == logging.WARNING


async def test_alertmanager_alerts_link_to_the_agents_status_page(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    """generatorURL is where a receiver's "source" link goes: the agent's own status page,
    by the host's name when the agent listens on every address."""
    script, state, _ = fake_systemctl
    (state / "llm.service").write_text("failed\n")
    receiver = Receiver()
    async with http_server(receiver.app()) as port:
        cfg = config(
            tmp_path,
            {
                "listenAddress": "0.0.0.0",
                "port": 9446,
                "hostName": "gpu-box",
                "systemctl": str(script),
                "checks": {"llm": unit_check("llm.service")},
                "alerts": {"sinks": {"alertmanager": {"url": f"http://127.0.0.1:{port}"}}},
            },
        )
        async with running(cfg):
            await wait_for(lambda: len(receiver.alertmanager) >= 1)
    assert receiver.alertmanager[0]["labels"]["alertname"] == "HydraCheckDown"
    assert receiver.alertmanager[0]["generatorURL"] == "http://gpu-box:9446/"


def test_status_url_of_a_specific_listener_is_that_address() -> None:
    assert status_url("192.168.1.30", 9446, "l") == "http://192.168.1.30:9446/"
    assert status_url("::", 9446, "l") == "http://l:9446/"
    assert status_url("fd00::1", 9446, "l") == "http://[fd00::1]:9446/"
