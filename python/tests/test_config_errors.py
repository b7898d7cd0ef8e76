"""Every service refuses a bad config file the same way: one line naming it, exit code 78."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hydra_fleet.core.errors import EX_CONFIG
from tests.installed import command_argv

LAUNCH = {"engine": "command", "command": ["true"], "port": 8000, "gpus": []}
HEALTH = {"checks": {"exporter": {"type": "tcp", "host": "127.0.0.1", "port": 9445}}}

# (command, config, expected field path in the message)
CASES = {
    "exporter typo": ("hydra-gpu-exporter", {"listenAdress": "0.0.0.0"}, "listenAdress"),
    "exporter wrong type": ("hydra-gpu-exporter", {"port": "9445"}, "port"),
    "launcher typo": ("hydra-launch", {**LAUNCH, "contextLenght": 8192}, "contextLenght"),
    "launcher wrong type": ("hydra-launch", {**LAUNCH, "port": [8000]}, "port"),
    "launcher missing secret": (
        "hydra-launch",
        {**LAUNCH, "apiKeyFile": "/nonexistent/api-key"},
        "apiKeyFile",
    ),
    "health typo": ("hydra-health", {**HEALTH, "chekcs": {}}, "chekcs"),
    "health wrong type": (
        "hydra-health",
        {"checks": {"x": {**HEALTH["checks"]["exporter"], "port": "a"}}},
        "checks.x.port",
    ),
    "health missing secret": (
        "hydra-health",
        {
            **HEALTH,
            "alerts": {
                "sinks": {
                    "ntfy": {
                        "url": "http://127.0.0.1:1",
                        "topic": "t",
                        "tokenFile": "/nonexistent/t",
                    }
                }
            },
        },
        "alerts.sinks.ntfy.tokenFile",
    ),
}
SUBCOMMAND = {"hydra-gpu-exporter": [], "hydra-launch": ["check"], "hydra-health": ["check"]}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_one_line_and_exit_78(case: str, tmp_path: Path) -> None:
    """The installed command prints one line with the file and field, no traceback, and exits 78."""
    command, config, field = CASES[case]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [*command_argv(command), *SUBCOMMAND[command], "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"{path}: {field}:" in lines[0]
    assert "Traceback" not in result.stderr
