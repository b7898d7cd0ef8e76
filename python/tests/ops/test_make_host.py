"""`make` refuses a HOST the flake does not define, and lists those it does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HOSTS = sorted(p.parent.name for p in (REPO / "hosts").glob("*/default.nix"))


def make(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if not (REPO / "Makefile").is_file() or not HOSTS:
        pytest.skip("not in a checkout of the repository (the Nix build has python/ only)")
    env = {k: v for k, v in os.environ.items() if k != "HOST"}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("goal", ["switch", "build", "trace", "deploy"])
def test_an_unknown_host_is_refused_with_the_list(goal: str) -> None:
    done = make(goal, "HOST=my-laptop")
    assert done.returncode != 0
    assert "HOST=my-laptop is not a host of this flake" in done.stderr
    assert f"it defines: {' '.join(HOSTS)}" in done.stderr
    assert "nixos" not in done.stdout  # nothing was about to run


def test_a_known_host_passes() -> None:
    host = HOSTS[0] if HOSTS else "none"  # make() skips without hosts/
    done = make("build", f"HOST={host}")
    assert done.returncode == 0, done.stderr
    assert f"nixosConfigurations.{host}" in done.stdout


def test_targets_without_a_host_do_not_ask_for_one() -> None:
    assert make("help", "HOST=my-laptop").returncode == 0
    assert make("rollback").returncode == 0
