"""The shipped agent alert rules pass `promtool test rules` and use only served metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hydra_fleet.health.metrics import Metrics

RULES = Path(__file__).resolve().parents[3] / "monitoring" / "rules"


def rules_dir() -> Path:
    if not (RULES / "health.rules.yml").exists():
        pytest.skip("monitoring/ is not part of this source tree (package build)")
    return RULES


def test_health_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = subprocess.run(
        [promtool, "test", "rules", "health.test.yml"],
        cwd=rules_dir(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_names_the_agent_serves() -> None:
    text = (rules_dir() / "health.rules.yml").read_text()
    used = set(re.findall(r"\bhydra_health_[a-z_]+", text))
    served = {
        sample
        for family in Metrics().registry.collect()
        for sample in (family.name, f"{family.name}_total")
    }
    assert used
    assert not used - served, used - served
