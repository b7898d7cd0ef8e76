"""The status pages over HTTP: what an operator must find on them, and the JSON behind them."""

from __future__ import annotations

import re
import time

from tests.ops.running import GIB, Host, get, get_json


def _row(page: str, name: str) -> str:
    """The table row whose first cell names `name`."""
    for row in re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.S):
        first = re.search(r"<td>(.*?)</td>", row, flags=re.S)
        text = re.sub(r"<[^>]+>", "", first.group(1)).strip() if first else ""
        if text == name or text.split(" ")[0] == name:
            return str(row)
    raise AssertionError(f"no row for {name!r}")


def test_agent_page_marks_the_down_check_and_shows_since_and_budget(host: Host) -> None:
    code, kind, page = get(host.agent + "/")
    assert code == 200
    assert kind.startswith("text/html")
    big = _row(page, "inference-big")
    assert 'class="bad"' in big
    assert 'data-state="down"' in big
    assert "DOWN" in big
    assert "cannot connect" in big
    assert re.search(r"\d+ of 3 left", big)  # restarts left in the budget
    assert re.search(r"\d+s ago", big)  # since when
    ok = _row(page, "inference-llm")
    assert 'data-state="up"' in ok
    assert 'class="bad"' not in ok
    assert "UNHEALTHY" in page


def test_agent_page_is_self_contained_refreshing_and_phone_ready(host: Host) -> None:
    page = get(host.agent + "/")[2]
    assert '<meta http-equiv="refresh"' in page
    assert 'name="viewport"' in page
    assert "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page.replace(host.agent, ""))


def test_agent_page_lists_engines_gpus_and_waiting_alerts(host: Host) -> None:
    page = get(host.agent + "/")[2]
    llm = _row(page, "llm")
    for text in ("llama-cpp", "/models/qwen3-8b.gguf", "8192", "nvidia:0 RTX 4090", "14.0 GiB"):
        assert text in llm
    assert 'data-state="ready"' in llm
    assert 'data-state="down"' in _row(page, "big")
    assert page.count('class="vram-bar"') == 2  # the two GPUs that answer
    assert "hydra-inference-llm.service 14.0 GiB" in page
    assert 'data-state="down"' in _row(page, "synthetic:2 Demo RTX 5090")
    assert re.search(r"\d+ °C", page)
    assert re.search(r"\d+ W / 300 W", page)
    waiting = next(  # the alerts themselves, not only a count
        row
        for row in re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.S)
        if "<strong>HydraCheckDown</strong> inference-big" in row
    )
    assert "webhook" in waiting
    assert 'data-state="firing"' in waiting
    webhook = _row(page, "webhook")
    assert re.search(
        r'<td data-label="alerts waiting"><div><span class="num">[1-9]\d*</span>', webhook
    )


def test_status_json_answers_the_operators_questions(host: Host) -> None:
    status = get_json(host.agent + "/status")
    assert status["host"] == "ops-test"
    assert status["healthy"] is False
    big = status["checks"]["inference-big"]
    assert big["state"] == "down"
    assert time.time() - 120 < big["since"] <= time.time()
    assert big["remediation"]["maxPerHour"] == 3
    assert 0 <= big["remediation"]["restartsLeft"] < 3
    assert big["remediation"]["nextAllowedAt"] > time.time() - 1
    assert status["checks"]["exporter"]["remediation"] is None
    assert status["outbox"]["webhook"]["waiting"] >= 2
    queued = {(w["alertname"], w["check"], w["sink"]) for w in status["waitingAlerts"]}
    assert ("HydraCheckDown", "inference-big", "webhook") in queued
    (llm,) = [i for i in status["instances"] if i["name"] == "llm"]
    assert llm["state"] == "ready"
    assert llm["readySince"] is not None
    assert llm["vram"] == [{"gpu": "synthetic:0", "memoryBytes": 14 * GIB}]
    assert [g["up"] for g in status["gpus"]] == [True, True, False]
    keys = set(status) | {k for c in status["checks"].values() for k in c}
    assert not [k for k in keys if "_" in k]  # one key style: camelCase


def test_root_serves_json_to_a_json_client(host: Host) -> None:
    _, kind, body = get(host.agent + "/", "application/json")
    assert kind.startswith("application/json")
    assert '"checks"' in body


def test_fleet_page_shows_the_host_that_does_not_answer(host: Host) -> None:
    page = get(host.agent + "/fleet")[2]
    silent = _row(page, "silent")
    assert 'data-state="no answer"' in silent
    assert "NO ANSWER" in silent
    here = _row(page, "ops-test")
    assert 'data-state="unhealthy"' in here
    assert "inference-big" in here  # its failing check
    assert "llm: /models/qwen3-8b.gguf" in here  # its engines
    assert "Demo Radeon Pro W7500" in here  # its GPUs
    assert "webhook" in here  # alerts waiting
    assert "not answering: silent" in page


def test_fleet_json(host: Host) -> None:
    fleet = get_json(host.agent + "/fleet")
    by_name = {h["name"]: h for h in fleet["hosts"]}
    assert by_name["silent"]["answered"] is False
    assert by_name["silent"]["error"]
    assert by_name["ops-test"]["status"]["host"] == "ops-test"


def test_exporter_page_shows_each_gpu_with_a_vram_bar(host: Host) -> None:
    code, kind, page = get(host.exporter + "/")
    assert code == 200
    assert kind.startswith("text/html")
    assert page.count('class="vram-bar"') == 2
    assert "16.0 GiB of 24.0 GiB (67%)" in page
    assert "comfyui.service 2.0 GiB" in page
    assert 'data-state="down"' in _row(page, "synthetic:2 Demo RTX 5090")
    assert 'href="/metrics"' in page
    assert '<meta http-equiv="refresh"' in page
