"""python/examples/: every file is a valid config, and every instance key is documented."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.core.config import key_of, load
from hydra_fleet.exporter.config import ExporterConfig
from hydra_fleet.health.config import HealthConfig, load_config
from hydra_fleet.launcher import config as launcher_config
from hydra_fleet.launcher.cli import main as launch_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSTANCES = sorted(EXAMPLES.glob("instance-*.json"))

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ not in this tree")


def _keys(cls: type[Any], prefix: str = "") -> list[str]:
    """Every JSON key of a config dataclass, nested ones as `parent.key`."""
    keys = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        keys.append(key_of(f))
        for arg in [hints[f.name], *typing.get_args(hints[f.name])]:
            inner = typing.get_args(arg) or (arg,)
            for tp in inner:
                if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                    keys += _keys(tp, f"{key_of(f)}.")
    return [prefix + k for k in keys]


def test_there_is_an_example_per_common_engine() -> None:
    engines = {json.loads(p.read_text())["engine"] for p in INSTANCES}
    assert {"tabbyapi", "llama-cpp", "ollama", "command"} <= engines


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_instance_example_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --static: the example's model and key files live on a host, not in this checkout.
    assert launch_main(["check", "--static", "--config", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_service_examples_are_valid() -> None:
    load(ExporterConfig, EXAMPLES / "exporter-synthetic.json")
    assert isinstance(load_config(EXAMPLES / "health-local.json"), HealthConfig)


def test_every_instance_key_is_documented() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    missing = [
        k for k in _keys(launcher_config.Instance) if f"`{k.rsplit('.', 1)[-1]}`" not in readme
    ]
    assert not missing, f"python/examples/README.md does not document {missing}"


def test_the_operator_keys_of_the_agent_are_documented() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for key in ("instancesFile", "exporterUrl", "fleet"):
        assert f"`{key}`" in readme
