"""`hydra-health status`, `hydra-launch ps` and the CLI conventions, run as installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.installed import command_argv
from tests.net import free_port
from tests.ops.running import Host

COMMANDS = ("hydra-health", "hydra-launch", "hydra-gpu-exporter")


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command_argv(name), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_status_names_what_is_failing_and_exits_1(host: Host) -> None:
    out = run("hydra-health", "status", "--config", str(host.config))
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ops-test: UNHEALTHY, 2 of 4 checks failing: gpus, inference-big")
    big = next(line for line in lines if line.startswith("inference-big "))
    assert " DOWN " in big
    assert "/3 left, next in" in big
    assert "cannot connect" in big
    assert any(line.startswith("webhook ") for line in lines)
    assert any(
        line.startswith("HydraCheckDown inference-big (firing)") and "webhook" in line
        for line in lines
    )
    assert any("synthetic:2 Demo RTX 5090" in line and "DOWN" in line for line in lines)


def test_status_json_and_url(host: Host) -> None:
    out = run("hydra-health", "status", "--url", host.agent, "--json")
    data = json.loads(out.stdout)
    assert data["checks"]["inference-llm"]["state"] == "up"
    assert out.returncode == 1


def test_status_fleet_marks_the_silent_host(host: Host) -> None:
    out = run("hydra-health", "status", "--url", host.agent, "--fleet")
    assert out.returncode == 1
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "NO ANSWER" in rows["silent"]
    assert "UNHEALTHY" in rows["ops-test"]
    assert "gpus, inference-big" in rows["ops-test"]


def test_status_without_an_agent_exits_69() -> None:
    out = run("hydra-health", "status", "--url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 69
    assert "no answer from" in out.stderr


def test_ps_lists_what_is_loaded_where(host: Host) -> None:
    out = run("hydra-launch", "ps", "--agent", host.agent)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "ENGINE",
        "MODEL",
        "CONTEXT",
        "GPUS",
        "VRAM",
        "STATE",
        "READY",
        "SINCE",
    ]
    llm = next(r for r in rows if r.startswith("llm "))
    for text in ("llama-cpp", "/models/qwen3-8b.gguf", "8192", "nvidia:0", "14.0 GiB", "ready"):
        assert text in llm
    assert llm.endswith(" ago")
    big = next(r for r in rows if r.startswith("big "))
    assert "DOWN" in big
    assert "32768" in big


def test_ps_json_and_fleet(host: Host) -> None:
    data = json.loads(run("hydra-launch", "ps", "--agent", host.agent, "--json").stdout)
    assert {i["name"]: i["state"] for i in data["instances"]} == {"big": "down", "llm": "ready"}
    out = run("hydra-launch", "ps", "--agent", host.agent, "--fleet")
    assert out.returncode == 0
    assert any(line.startswith("ops-test  llm ") for line in out.stdout.splitlines())
    assert "silent: NO ANSWER" in out.stdout
    fleet = json.loads(run("hydra-launch", "ps", "--agent", host.agent, "--fleet", "--json").stdout)
    assert [h["answered"] for h in fleet["hosts"]] == [True, False]


def test_alerts_list_takes_config_after_the_subcommand_in_camel_case(host: Host) -> None:
    out = run("hydra-health", "alerts", "list", "--config", str(host.config), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows
    assert {"dedupKey", "startsAt", "createdAt", "deliveredAt", "lastError", "nextTry"} <= set(
        rows[0]
    )
    assert not [k for row in rows for k in row if "_" in k]


def test_inspecting_a_made_up_state_dir_creates_nothing(tmp_path: Path) -> None:
    made_up = tmp_path / "no" / "such" / "state"
    for args in (["alerts", "list"], ["alerts", "list", "--json"], ["alerts"]):
        out = run("hydra-health", *args, "--state-dir", str(made_up))
        assert out.returncode == 0, out.stderr
        assert "no state database" in out.stderr
    assert not (tmp_path / "no").exists()


def test_zero_checks_is_an_error_unless_asked_for(tmp_path: Path) -> None:
    out = run("hydra-health", "check")
    assert out.returncode == 78
    assert "no checks configured" in out.stderr
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert run("hydra-health", "gate", "--config", str(empty), "--timeout", "1").returncode == 78
    assert run("hydra-health", "check", "--config", str(empty), "--allow-empty").returncode == 0


@pytest.mark.parametrize("name", COMMANDS)
def test_version(name: str) -> None:
    out = run(name, "--version")
    assert out.returncode == 0
    assert out.stdout.startswith(f"{name}, version ")


@pytest.mark.parametrize("name", COMMANDS)
def test_help_teaches_examples_and_exit_codes(name: str) -> None:
    text = run(name, "--help").stdout
    assert "Examples:" in text
    assert "Exit codes:" in text
    assert "78" in text


@pytest.mark.parametrize("args", [["status"], ["check"], ["gate"], ["alerts"]], ids=lambda a: a[0])
def test_every_health_subcommand_has_examples(args: list[str]) -> None:
    assert "Examples:" in run("hydra-health", *args, "--help").stdout
