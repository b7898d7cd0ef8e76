"""Helpers shared by the launcher tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.core import config as core_config
from hydra_fleet.launcher.config import Instance

RTX5090 = {
    "vendor": "nvidia",
    "model": "RTX 5090",
    "vramGiB": 32,
    "arch": "sm_120",
    "index": 0,
    "uuid": "GPU-5090",
}
RTX4090 = {
    "vendor": "nvidia",
    "model": "RTX 4090",
    "vramGiB": 24,
    "arch": "sm_89",
    "index": 1,
    "uuid": "GPU-4090",
}
LLAMA3_70B_35 = {
    "parameters": 70.6e9,
    "bitsPerWeight": 3.5,
    "layers": 80,
    "kvHeads": 8,
    "headDim": 128,
}


def instance(**keys: Any) -> Instance:
    data = {"port": 5000, "name": "llm", "workDir": "/srv/llm", **keys}
    converter = core_config._Converter("test", set())
    result: Instance = converter.convert(Instance, data, "")
    return result


@pytest.fixture(name="write_config")
def fixture_write_config(tmp_path: Path) -> Any:
    def write(**keys: Any) -> Path:
        path = tmp_path / "instance.json"
        path.write_text(json.dumps(keys))
        return path

    return write
