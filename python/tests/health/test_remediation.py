"""Remediation budget with a fake clock: hour-long windows tested in milliseconds."""

from __future__ import annotations

import random
from pathlib import Path

from hydra_fleet.health.clock import FakeClock
from hydra_fleet.health.config import Budget, CheckConfig, Remediate
from hydra_fleet.health.remediation import Remediator, backoff_delay
from hydra_fleet.health.store import AsyncStore


class Escalations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    async def __call__(self, check: str, service: str, firing: bool) -> None:
        self.calls.append((check, service, firing))


CHECK = CheckConfig(
    type="systemd", unit="hydra-inference-llm.service", remediate=Remediate(action="restart")
)
BUDGET = Budget(max_per_hour=3, window=3600, backoff_base=30, backoff_max=900)


def make(
    tmp_path: Path, systemctl: Path, clock: FakeClock, escalate: Escalations
) -> tuple[Remediator, AsyncStore]:
    store = AsyncStore(tmp_path / "state" / "health.sqlite3")
    return (
        Remediator(
            store,
            clock,
            BUDGET,
            systemctl=str(systemctl),
            escalate=escalate,
            rng=random.Random(1),  # noqa: S311 - test jitter
        ),
        store,
    )


def restarts(log: Path) -> int:
    return log.read_text().count("restart ") if log.exists() else 0


async def test_three_restarts_per_hour_then_one_escalation_surviving_a_restart(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, _, log = fake_systemctl
    clock = FakeClock()
    escalate = Escalations()
    rem, store = make(tmp_path, script, clock, escalate)
    outcomes = []
    for _ in range(3):
        outcomes.append(await rem.on_down("llm", CHECK, "down"))
        outcomes.append(await rem.on_down("llm", CHECK, "down"))  # inside the backoff
        clock.advance(1000)  # beyond any backoff (max 900 s)
    assert outcomes == ["restarted", "backoff"] * 3
    assert restarts(log) == 3
    assert log.read_text().splitlines()[0] == "restart hydra-inference-llm.service --no-block"
    store.close()

    # the agent restarts: the budget and the escalation are remembered
    rem, store = make(tmp_path, script, clock, escalate)
    assert await rem.remaining("hydra-inference-llm.service") == 0
    assert await rem.on_down("llm", CHECK, "down") == "escalated"
    assert await rem.on_down("llm", CHECK, "down") == "exhausted"
    store.close()
    rem, store = make(tmp_path, script, clock, escalate)
    clock.advance(3600)  # a new hour: still stopped until the check passes again
    assert await rem.on_down("llm", CHECK, "down") == "exhausted"
    assert restarts(log) == 3
    assert escalate.calls == [("llm", "hydra-inference-llm.service", True)]

    await rem.on_recovered("llm", CHECK)
    assert escalate.calls[-1] == ("llm", "hydra-inference-llm.service", False)
    assert await rem.on_down("llm", CHECK, "down") == "restarted"
    store.close()


async def test_rolling_window_frees_budget_one_attempt_at_a_time(
    tmp_path: Path, fake_systemctl: tuple[Path, Path, Path]
) -> None:
    script, _, log = fake_systemctl
    clock = FakeClock()
    rem, store = make(tmp_path, script, clock, Escalations())
    for _ in range(3):
        assert await rem.on_down("llm", CHECK, "down") == "restarted"
        clock.advance(1000)
    # 3000 s after the first attempt: 3 in the window
    assert await rem.remaining("hydra-inference-llm.service") == 0
    clock.advance(601)  # the first attempt has left the window
    assert await rem.remaining("hydra-inference-llm.service") == 1
    await rem.on_recovered("llm", CHECK)
    assert await rem.on_down("llm", CHECK, "down") == "restarted"
    assert restarts(log) == 4
    store.close()


async def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)  # noqa: S311 - test jitter
    for attempt, full in [(1, 30), (2, 60), (3, 120), (6, 900), (10, 900)]:
        for _ in range(20):
            delay = backoff_delay(30, 900, attempt, rng)
            assert full / 2 <= delay <= full


async def test_failed_command_remediation_is_recorded_and_counted(tmp_path: Path) -> None:
    clock = FakeClock()
    actions: list[tuple[str, str, str]] = []
    store = AsyncStore(tmp_path / "h.sqlite3")
    rem = Remediator(
        store,
        clock,
        BUDGET,
        escalate=Escalations(),
        on_action=lambda s, a, r: actions.append((s, a, r)),
    )
    check = CheckConfig(
        type="command",
        command=["true"],
        remediate=Remediate(action="command", command=["sh", "-c", "exit 2"]),
    )
    assert await rem.on_down("queue", check, "stuck") == "failed"
    assert actions == [("check:queue", "command", "failed")]
    assert await rem.remaining("check:queue") == 2
    store.close()
