"""Every shipped alert reaches a receiver through the shipped Alertmanager config, once per fault.

monitoring/alertmanager/alertmanager.json is the route tree and the inhibitions that
roles/monitoring.nix imports; the role only adds the receivers' webhook configs, which these
tests add the same way. `amtool config routes test` walks every Prometheus rule and every alert
the health agent sends; a real Alertmanager proves the inhibitions make one fault one page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.exporter.running import wait_http
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
AGENT = Path(__file__).resolve().parents[2] / "src" / "hydra_fleet" / "health" / "agent.py"
EXPECTED_RECEIVER = {"critical": "page", "warning": "notify"}


def shipped_config() -> dict[str, Any]:
    path = MONITORING / "alertmanager" / "alertmanager.json"
    if not path.exists():
        pytest.skip(f"{path} is not part of this source tree (package build)")
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def with_receivers(config: dict[str, Any], url: str) -> dict[str, Any]:
    """What the role writes when both ntfy and the webhook are set: every receiver posts."""
    filled: dict[str, Any] = json.loads(json.dumps(config))
    for receiver in filled["receivers"]:
        receiver["webhook_configs"] = [{"url": f"{url}/{receiver['name']}", "send_resolved": True}]
    return filled


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"{names[0]} not installed")


def rule_alerts() -> list[dict[str, str]]:
    """alertname + severity of every alerting rule shipped in monitoring/rules/."""
    alerts = []
    for path in sorted((MONITORING / "rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts.append({"alertname": rule["alert"], **rule.get("labels", {})})
    return alerts


def agent_alerts() -> list[dict[str, str]]:
    """alertname + severity of every alert the health agent raises (from its source)."""
    if not AGENT.exists():
        pytest.skip("the health agent's source is not in this tree")
    found = re.findall(r'_labels\(\s*"(Hydra\w+)",\s*\w+,\s*"(\w+)"\s*\)', AGENT.read_text())
    assert found, "no alert found in the agent's source: has _labels() changed?"
    return [{"alertname": name, "severity": severity} for name, severity in found]


def test_every_alert_routes_to_a_receiver(tmp_path: Path) -> None:
    """Each shipped rule and agent alert, with a host label, reaches the receiver its severity
    names; both receivers have somewhere to send to."""
    amtool = tool("amtool")
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps(with_receivers(shipped_config(), "http://127.0.0.1:9")))
    check = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    alerts = rule_alerts() + agent_alerts()
    names = {a["alertname"] for a in alerts}
    assert {"HydraGpuExporterDown", "HydraHealthAgentDown", "HydraHostDown"} <= names
    assert {"HydraCheckDown", "HydraRemediationExhausted"} <= names
    for alert in alerts:
        assert alert.get("severity") in EXPECTED_RECEIVER, alert
        labels = [f"{k}={v}" for k, v in {**alert, "host": "l"}.items()]
        result = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"--verify.receivers={EXPECTED_RECEIVER[alert['severity']]}",
                *labels,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{alert}: {result.stdout}{result.stderr}"


def test_one_name_per_fault() -> None:
    """Prometheus rules and the agent never report the same fault under two names: no rule
    watches the agent's check states, which the agent itself alerts on."""
    rules = rule_alerts()
    agent = {a["alertname"] for a in agent_alerts()}
    assert not {r["alertname"] for r in rules} & agent
    text = "".join(p.read_text() for p in (MONITORING / "rules").glob("*.rules.yml"))
    assert "hydra_health_check_state" not in text
    assert "hydra_health_remediation_budget_remaining" not in text


class _Sink(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path.strip("/"), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def post_alerts(port: int, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels, "annotations": {}} for labels in alerts]).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 200


def test_one_fault_pages_once(tmp_path: Path) -> None:
    """A real Alertmanager with the shipped inhibitions: a lost GPU (exporter's GpuDown and
    GpuMissing, the agent's gpus check) pages once; a host that is down (host down, its agent
    and exporter down, its last check alerts) pages once; another host is not silenced."""
    binary = tool("alertmanager", "prometheus-alertmanager")
    received: list[tuple[str, dict[str, Any]]] = []
    handler = type("Sink", (_Sink,), {"received": received})
    sink = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    config = with_receivers(shipped_config(), f"http://127.0.0.1:{sink.server_address[1]}")
    # Shorter waits than shipped, so the test runs in seconds; the tree is the shipped one.
    config["route"].update(group_wait="1s", group_interval="1s")
    (tmp_path / "am.yml").write_text(json.dumps(config))
    port, cluster = free_port(), free_port()
    with (tmp_path / "alertmanager.log").open("wb") as log:
        am = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--cluster.listen-address=127.0.0.1:{cluster}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", am)
        post_alerts(
            port,
            [
                # One lost GPU on l.
                {
                    "alertname": "HydraGpuDown",
                    "severity": "critical",
                    "host": "l",
                    "vendor": "amd",
                    "index": "1",
                    "uuid": "0000:0c:00.0",
                },
                {
                    "alertname": "HydraGpuMissing",
                    "severity": "critical",
                    "host": "l",
                    "vendor": "amd",
                },
                {
                    "alertname": "HydraCheckDown",
                    "severity": "warning",
                    "host": "l",
                    "check": "gpus",
                },
                # hydra-ai is down.
                {"alertname": "HydraHostDown", "severity": "critical", "host": "hydra-ai"},
                {"alertname": "HydraHealthAgentDown", "severity": "critical", "host": "hydra-ai"},
                {"alertname": "HydraGpuExporterDown", "severity": "critical", "host": "hydra-ai"},
                {
                    "alertname": "HydraCheckDown",
                    "severity": "warning",
                    "host": "hydra-ai",
                    "check": "tabbyapi",
                },
                # An unrelated fault elsewhere still gets through.
                {
                    "alertname": "HydraCheckDown",
                    "severity": "warning",
                    "host": "hydra-compute",
                    "check": "ollama",
                },
            ],
        )
        deadline = time.monotonic() + 20
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # any page that should have been held back would have come by now
    finally:
        am.terminate()
        am.wait(timeout=20)
        sink.shutdown()
        sink.server_close()
    pages = sorted(
        (receiver, alert["labels"]["alertname"], alert["labels"]["host"])
        for receiver, body in received
        for alert in body["alerts"]
        if alert["status"] == "firing"
    )
    assert pages == [
        ("notify", "HydraCheckDown", "hydra-compute"),
        ("page", "HydraGpuDown", "l"),
        ("page", "HydraHostDown", "hydra-ai"),
    ], (tmp_path / "alertmanager.log").read_text()[-2000:]
