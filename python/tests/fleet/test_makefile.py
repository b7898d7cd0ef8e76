"""The Makefile's NixOS targets: what they run, that they print it, and the deploy gate's CLI.

A stand-in `hydra-deploy` on PATH records its arguments, so the targets run for real without
Nix or a NixOS host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if not (REPO / "Makefile").is_file():
        pytest.skip("not in a checkout of the repository (the Nix build has python/ only)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    script = bin_dir / "hydra-deploy"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    script.chmod(0o755)
    return bin_dir


def make(fake_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    env.pop("HOST", None)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def calls(fake_bin: Path) -> list[str]:
    log = fake_bin.parent / "calls"
    return log.read_text().splitlines() if log.exists() else []


def test_switch_is_the_default_and_goes_through_the_gate(fake_bin: Path) -> None:
    done = make(fake_bin, "HOST=hydra-ai")
    assert done.returncode == 0, done.stderr
    expected = "switch --flake .#hydra-ai --gate-timeout 300"
    assert calls(fake_bin) == [expected]
    assert f"hydra-deploy {expected}" in done.stdout  # printed before it runs


def test_trace_passes_show_trace_through(fake_bin: Path) -> None:
    done = make(fake_bin, "trace", "HOST=l", "GATE_TIMEOUT=120")
    assert done.returncode == 0, done.stderr
    assert calls(fake_bin) == ["switch --flake .#l --gate-timeout 120 --show-trace"]


def test_deploy_targets_the_named_host_over_ssh(fake_bin: Path) -> None:
    done = make(fake_bin, "deploy", "HOST=hydra-compute")
    assert done.returncode == 0, done.stderr
    assert calls(fake_bin) == [
        "switch --flake .#hydra-compute --target-host root@hydra-compute --gate-timeout 300"
    ]
    make(fake_bin, "deploy", "HOST=l", "TARGET=root@192.168.1.30")
    assert calls(fake_bin)[-1].endswith(
        "--flake .#l --target-host root@192.168.1.30 --gate-timeout 300"
    )


def test_deploy_without_a_host_refuses_and_runs_nothing(fake_bin: Path) -> None:
    done = make(fake_bin, "deploy")
    assert done.returncode != 0
    assert "usage: make deploy HOST=" in done.stderr
    assert calls(fake_bin) == []


def test_rollback_is_local_unless_a_target_is_given(fake_bin: Path) -> None:
    assert make(fake_bin, "rollback").returncode == 0
    assert make(fake_bin, "rollback", "TARGET=root@hydra-ai").returncode == 0
    assert calls(fake_bin) == ["rollback", "rollback --target-host root@hydra-ai"]


def test_nix_targets_print_their_commands(fake_bin: Path) -> None:
    done = make(fake_bin, "-n", "build", "update", "check", "HOST=l")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "nix build .#nixosConfigurations.l.config.system.build.toplevel",
        "nix flake update",
        "nix flake check .",
    ]


def test_plan_builds_the_hosts_instance_plan_without_deploying(fake_bin: Path) -> None:
    """`make plan HOST=l` builds the host's build-time check of its instances (the per-GPU
    table) and prints it; it never calls hydra-deploy."""
    done = make(fake_bin, "-n", "plan", "HOST=l")
    assert done.returncode == 0, done.stderr
    assert (
        "nix build --no-link --print-out-paths '.#nixosConfigurations.l.config.environment"
        '.etc."hydra-inference/plan.txt".source\' | xargs cat'
    ) in done.stdout
    assert calls(fake_bin) == []
    refused = make(fake_bin, "plan", "HOST=laptop")
    assert refused.returncode != 0
    assert "HOST=laptop is not a host of this flake" in refused.stderr
