"""The shipped alert rules (promtool test rules) and the Grafana dashboard's metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hydra_fleet.exporter.collector import COUNTERS, GAUGES, LABELLED

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"

# Every family the exporter can serve (counters with their _total sample name).
SERVED = {
    "hydra_gpu_up",
    "hydra_gpu_info",
    *(f"hydra_gpu_{name}" for name, _ in GAUGES),
    *(f"hydra_gpu_{name}_total" for name, _ in COUNTERS),
    *(f"hydra_gpu_{name}" for name, _, _, _ in LABELLED),
    "hydra_gpu_process_memory_bytes",
    "hydra_gpu_expected_devices",
    "hydra_gpu_exporter_collector_success",
    "hydra_gpu_exporter_collector_duration_seconds",
    "hydra_gpu_exporter_build_info",
}


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not part of this source tree (package build)")
    return path


@pytest.mark.parametrize("tests", ["gpu.test.yml", "fleet.test.yml"])
def test_alert_rules_pass_promtool(tests: str) -> None:
    """promtool test rules: GPU missing (keeping host), down, hot, memory full, XID, ECC, row
    remap failure, degraded link, exporter down; a whole host down."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    rules = needs(MONITORING / "rules")
    result = subprocess.run(
        [promtool, "test", "rules", tests],
        cwd=rules,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bhydra_gpu_[a-z_]+", text))


def test_rules_and_dashboard_use_served_names() -> None:
    """Every hydra_gpu_* name in the rules and the dashboard is one the exporter serves."""
    rules = used_metrics(needs(MONITORING / "rules" / "gpu.rules.yml").read_text())
    dashboard_text = needs(MONITORING / "dashboards" / "gpu.json").read_text()
    dashboard = json.loads(dashboard_text)
    assert dashboard["panels"]
    exprs = "\n".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    exprs += json.dumps(dashboard.get("templating", {}))
    assert not rules - SERVED, rules - SERVED
    assert not used_metrics(exprs) - SERVED, used_metrics(exprs) - SERVED
    assert "hydra_gpu_process_memory_bytes" in exprs
