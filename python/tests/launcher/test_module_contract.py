"""Configs as the NixOS module writes them (recorded from nixos-eval) load and plan as meant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydra_fleet.launcher import config, preflight
from hydra_fleet.launcher.engines import launch_spec

DATA = Path(__file__).with_name("data")


def test_tabbyapi_instance_from_the_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """hydra-ai's llm: GPU facts, key via LoadCredential, state dir from systemd."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/hydra-inference-llm.service")
    instance = config.load(DATA / "module-llm.json")
    assert instance.api_key_path() == Path("/run/credentials/hydra-inference-llm.service/apiKey")
    assert [g.uuid for g in instance.gpus] == ["GPU-aaaa", None]
    pre = preflight.run(instance, None)
    assert pre.fit.fits
    spec = launch_spec(instance, pre.fit, {"STATE_DIRECTORY": str(tmp_path)})
    assert spec.argv == ["/nix/store/x-tabbyapi/bin/tabbyapi", "--config", f"{tmp_path}/config.yml"]
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa,1"


def test_ollama_user_instance_from_the_module() -> None:
    """hydra-ai's small: an Ollama model name, planned without reading any file."""
    instance = config.load(DATA / "module-small.json")
    spec = launch_spec(instance, preflight.run(instance, None).fit, {})
    assert spec.env["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert json.loads(json.dumps(spec.probe.models)) == ["qwen3:8b"]
