"""Shared helpers for the exporter tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(text: str, name: str) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def synthetic_config(tmp_path: Path, **extra: object) -> Path:
    config = {
        "backends": ["synthetic"],
        "expectedDevices": {"synthetic": 2},
        "synthetic": {
            "devices": [
                {
                    "name": "demo 4090",
                    "vendor": "nvidia",
                    "memoryBytes": 24 * 1024**3,
                    "processes": [
                        {
                            "pid": 4242,
                            "comm": "ollama",
                            "unit": "ollama.service",
                            "memoryBytes": 1024**3,
                        }
                    ],
                },
                {"name": "demo mi50", "vendor": "amd", "memoryBytes": 32 * 1024**3, "lost": True},
            ]
        },
        **extra,
    }
    path = tmp_path / "exporter.json"
    path.write_text(json.dumps(config))
    return path
