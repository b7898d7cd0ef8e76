"""The per-check state machine: thresholds, grace, flapping, dependencies."""

from __future__ import annotations

from hydra_fleet.health.config import CheckConfig, Flap
from hydra_fleet.health.state import CheckState, resolve


def make(name: str = "c", **kw: object) -> CheckState:
    config = CheckConfig(type="tcp", host="h", port=1, **kw)  # type: ignore[arg-type]
    return CheckState(name, config, Flap(), started_at=0.0)


def feed(state: CheckState, results: str, start: float = 100.0) -> list[str]:
    seen: list[str] = []
    for i, r in enumerate(results):
        state.record(r == "+", "d", 0.0, start + i)
        seen.append(state.own)
    return seen


def current(state: CheckState) -> str:
    return state.own


def test_goes_down_after_threshold_and_back_after_passes() -> None:
    s = make(failure_threshold=3, success_threshold=2)
    assert feed(s, "++") == ["pending", "up"]
    assert feed(s, "---") == ["up", "up", "down"]
    assert feed(s, "++") == ["down", "up"]


def test_a_single_failure_among_passes_never_goes_down() -> None:
    s = make(failure_threshold=3)
    assert "down" not in feed(s, "++-+--+-++--+")


def test_startup_grace_counts_no_failures() -> None:
    s = make(failure_threshold=2, startup_grace=50.0)
    for t in range(0, 50, 5):
        s.record(False, "loading", 0.0, float(t))
    assert s.own == "pending"
    s.record(False, "x", 0.0, 51.0)
    s.record(False, "x", 0.0, 52.0)
    assert current(s) == "down"


def test_restart_grace_resets_the_failure_count() -> None:
    s = make(failure_threshold=2, startup_grace=10.0)
    feed(s, "--", start=20.0)
    assert s.own == "down"
    s.restart_grace(30.0)
    s.record(False, "x", 0.0, 35.0)
    assert s.consecutive_failures == 0


def test_flapping_opens_and_closes() -> None:
    s = make(failure_threshold=1, success_threshold=1)
    states = feed(s, "+-" * 10)
    assert states[-1] == "flapping"
    # steady passes bring the change ratio under `low`
    states = feed(s, "+" * 20, start=200.0)
    assert states[-1] == "up"


def test_dependency_down_blocks_the_dependant_but_not_a_passing_one() -> None:
    gpu = make("gpu", failure_threshold=1)
    llm = make("llm", failure_threshold=1, depends_on=["gpu"])
    gw = make("gw", failure_threshold=1, depends_on=["llm"])
    states = {"gpu": gpu, "llm": llm, "gw": gw}
    for s in states.values():
        s.record(False, "x", 0.0, 100.0)
    changed = resolve(states)
    assert changed == {
        "gpu": ("pending", "down"),
        "llm": ("pending", "blocked"),
        "gw": ("pending", "blocked"),
    }
    for _ in range(2):
        gpu.record(True, "ok", 0.0, 101.0)
    resolve(states)
    assert (gpu.effective, llm.effective, gw.effective) == ("up", "down", "blocked")


def test_a_dependency_still_pending_blocks_a_failing_dependant() -> None:
    """The dependant may reach its threshold before its dependency has any verdict (a slower
    interval, a longer grace): it is blocked then, never down, so it is neither restarted nor
    alerted for what its dependency may explain."""
    gpu = make("gpu", failure_threshold=3)
    llm = make("llm", failure_threshold=1, depends_on=["gpu"])
    states = {"gpu": gpu, "llm": llm}
    gpu.record(False, "x", 0.0, 100.0)  # 1 of 3: gpu still pending
    llm.record(False, "x", 0.0, 100.0)  # llm at its threshold
    assert gpu.own == "pending"
    assert llm.own == "down"
    assert resolve(states) == {"llm": ("pending", "blocked")}
    for _ in range(2):  # a passing dependant is its own state
        llm.record(True, "ok", 0.0, 101.0)
    resolve(states)
    assert llm.effective == "up"
