"""Every hydra unit of every host, scored by `systemd-analyze security --offline`.

The units come from the stand-in evaluation of the flake (`report`, see conftest.py), are written
out as unit files the way NixOS renders `serviceConfig`, and are scored by the host's systemd. A
unit above `MAX_EXPOSURE` fails with systemd's own table of what it lacks. Skips without
`NIXPKGS_LIB` (like the other fleet tests) or without `systemd-analyze`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

# nixpkgs' own services.ollama scores 1.6; "OK" in systemd's words is below 4.
MAX_EXPOSURE = 2.0
HOSTS = ("hydra-ai", "hydra-compute", "l")


def unit_value(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def render_unit(name: str, unit: dict[str, Any]) -> str:
    """The unit file NixOS writes for `systemd.services.<name>` (the parts systemd scores)."""
    lines = ["[Unit]", f"Description={unit.get('description') or name}"]
    for key in ("after", "wants", "requires", "bindsTo"):
        for other in unit.get(key, []):
            lines.append(f"{key[0].upper()}{key[1:]}={other}")
    for key, value in unit.get("unitConfig", {}).items():
        lines.append(f"{key}={unit_value(value)}")
    lines.append("[Service]")
    for key, value in unit.get("environment", {}).items():
        lines.append(f'Environment="{key}={value}"')
    for key, value in unit.get("serviceConfig", {}).items():
        # A list is one line per item; [""] resets (e.g. CapabilityBoundingSet= : none).
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={unit_value(item)}")
    return "\n".join(lines) + "\n"


def exposure(path: Path) -> tuple[float, str]:
    """systemd's overall exposure of the unit file, and its table."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found is not None, f"systemd-analyze gave no score:\n{done.stdout}{done.stderr}"
    return float(found.group(1)), done.stdout


def hydra_units(report: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    entry = report["hosts"][host]
    assert "result" in entry, f"{host} did not evaluate: {report.get('_output', '')}"
    services: dict[str, dict[str, Any]] = entry["result"]["services"]
    return {name: unit for name, unit in services.items() if name.startswith("hydra-")}


@pytest.fixture(name="analyze")
def fixture_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")


@pytest.mark.usefixtures("analyze")
@pytest.mark.parametrize("host", HOSTS)
def test_every_hydra_unit_scores_at_most_two(
    report: dict[str, Any], host: str, tmp_path: Path
) -> None:
    """No hydra unit is more exposed than nixpkgs' best GPU service (ollama, 1.6) by much."""
    units = hydra_units(report, host)
    assert {"hydra-gpu-exporter", "hydra-health"} <= set(units), sorted(units)
    too_exposed = {}
    for name, unit in units.items():
        path = tmp_path / f"{name}.service"
        path.write_text(render_unit(name, unit))
        score, table = exposure(path)
        if score > MAX_EXPOSURE:
            too_exposed[name] = f"{score}\n{table}"
    assert not too_exposed, "\n".join(f"{host}: {n} scores {t}" for n, t in too_exposed.items())


@pytest.mark.usefixtures("analyze")
def test_every_hydra_unit_of_the_vm_tests_scores_at_most_two(
    report: dict[str, Any], tmp_path: Path
) -> None:
    """The VM tests run the modules as the hosts do, sandbox included."""
    too_exposed, scored = {}, []
    for check, entry in report["checks"].items():
        nodes = entry.get("result", {}).get("nodes", {})
        for node, result in nodes.items():
            for name, unit in result["services"].items():
                if not name.startswith("hydra-"):
                    continue
                scored.append(f"{check}/{node}/{name}")
                path = tmp_path / f"{check}-{node}-{name}.service"
                path.write_text(render_unit(name, unit))
                score, table = exposure(path)
                if score > MAX_EXPOSURE:
                    too_exposed[f"{check}/{node}/{name}"] = f"{score}\n{table}"
    assert len(scored) >= 3, f"the VM tests should run hydra units: {scored}"
    assert not too_exposed, "\n".join(f"{n} scores {t}" for n, t in too_exposed.items())


@pytest.mark.usefixtures("analyze")
def test_an_unhardened_unit_fails_the_bound(tmp_path: Path) -> None:
    """The scorer sees the difference: a bare unit is far above the bound."""
    path = tmp_path / "bare.service"
    path.write_text(render_unit("bare", {"serviceConfig": {"ExecStart": "/bin/true"}}))
    score, _ = exposure(path)
    assert score > MAX_EXPOSURE
