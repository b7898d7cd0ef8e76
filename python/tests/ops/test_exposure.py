"""The launcher warns when an engine is reachable beyond loopback without an API key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.core.config import load
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.exposure import exposure_warning, listen_address
from tests.installed import command_argv

GPU = {"vendor": "nvidia", "model": "RTX 4090", "vramGiB": 24, "arch": "sm_89", "index": 0}


def _listen_key() -> str:
    # `host` is being renamed `listenAddress`: write whichever this version reads.
    keys = set(Instance.__dataclass_fields__)
    return "listenAddress" if "listen_address" in keys else "host"


def write(tmp_path: Path, address: str, **extra: Any) -> Path:
    data = {
        "name": "llm",
        "engine": "tabbyapi",
        "port": 5000,
        "model": "/m",
        "contextLength": 8192,
        "gpus": [GPU],
        _listen_key(): address,
        **extra,
    }
    path = tmp_path / "llm.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::", "hydra-ai"])
def test_beyond_loopback_without_a_key_warns(tmp_path: Path, address: str) -> None:
    instance = load(Instance, write(tmp_path, address))
    assert listen_address(instance) == address
    warning = exposure_warning(instance)
    assert warning is not None
    assert f"listens on {address}:5000 with no API key" in warning
    assert "apiKeyFile" in warning


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_is_quiet(tmp_path: Path, address: str) -> None:
    assert exposure_warning(load(Instance, write(tmp_path, address))) is None


def test_a_key_is_quiet(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("secret\n")
    path = write(tmp_path, "0.0.0.0", apiKeyFile=str(key))
    assert exposure_warning(load(Instance, path)) is None


def test_check_prints_the_warning(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *command_argv("hydra-launch"),
            "check",
            "--static",
            "--config",
            str(write(tmp_path, "0.0.0.0")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "listens on 0.0.0.0:5000 with no API key" in out.stderr
