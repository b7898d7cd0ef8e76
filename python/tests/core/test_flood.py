"""Both servers under a hostile LAN: 1,100 idle and 200 slowloris connections each, with
the services held to systemd's default 1024 descriptors. Every scrape is still answered
and the agent's check of the exporter never changes state. (The latency figures are
printed by `bench/flood.py`; here only a generous sanity bound.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.core.flood import flood, raise_own_nofile, scrape, services

IDLE, SLOW = 1100, 200


def test_scrapes_are_answered_and_no_check_changes_state_under_a_connection_flood(
    tmp_path: Path,
) -> None:
    if not raise_own_nofile(2 * (IDLE + SLOW) + 200):
        pytest.skip("the hard descriptor limit is too low to hold the flood's client sockets")
    with services(tmp_path) as svc:
        deadline = time.monotonic() + 30
        while svc.status()["checks"]["exporter"]["state"] != "up":
            assert time.monotonic() < deadline, svc.status()
            time.sleep(0.2)
        runs_before = svc.status()["checks"]["exporter"]["runs"]
        with flood([svc.exporter, svc.agent], IDLE, SLOW) as held:
            assert len(held.idle) + len(held.slow) >= 2 * (IDLE + SLOW) * 0.9
            for url in (
                f"http://127.0.0.1:{svc.exporter}/metrics",
                f"http://127.0.0.1:{svc.agent}/metrics",
                f"http://127.0.0.1:{svc.agent}/status",
            ):
                figures = scrape(url, 10)
                assert figures["answered"] == figures["asked"], (url, figures)
                assert figures["max_ms"] < 5000, (url, figures)  # sanity only
            time.sleep(2.5)  # a few more check runs while the flood holds
            status = svc.status()
        check = status["checks"]["exporter"]
        assert check["state"] == "up", check
        assert check["consecutiveFailures"] == 0, check
        assert check["runs"] > runs_before
        for proc in svc.procs:
            assert proc.poll() is None
    for log in ("exporter.log", "agent.log"):
        text = (tmp_path / log).read_text()
        assert "Too many open files" not in text, text[-2000:]
        assert "Traceback" not in text, text[-2000:]
