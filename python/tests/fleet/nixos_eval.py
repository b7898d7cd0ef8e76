"""Running the shared `nixos-eval` tool on a flake (nixpkgs' option stand-ins, no nixpkgs).

Needs `NIXPKGS_LIB` (nixpkgs' `lib` folder), `nix-instantiate`, and the tool: `$NIXOS_EVAL`, or
`shared/tools/nixos-eval/run` beside the repository (as in CI) or beside the main checkout of a
git worktree. Skips without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
TOOL_TIMEOUT = 300


def find_tool() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("NIXOS_EVAL"):
        candidates.append(Path(os.environ["NIXOS_EVAL"]))
    candidates.append(REPO.parent / "shared/tools/nixos-eval/run")
    # In a git worktree, the main checkout's neighbour.
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        candidates.append(Path(common).parent.parent / "shared/tools/nixos-eval/run")
    except (OSError, subprocess.SubprocessError):
        pass
    return next((c for c in candidates if c.is_file()), None)


def run_tool(flake: Path, out: Path) -> dict[str, Any]:
    """nixos-eval on `flake`; its JSON report, with the printed output and exit status."""
    if not os.environ.get("NIXPKGS_LIB"):
        pytest.skip("NIXPKGS_LIB is not set (nixpkgs' lib folder)")
    if not (REPO / "flake.nix").is_file():
        pytest.skip("not in a checkout of the repository (the Nix build has python/ only)")
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate is not installed")
    tool = find_tool()
    if tool is None:
        pytest.skip("nixos-eval not found (set NIXOS_EVAL or put shared/ beside the checkout)")
    env = dict(os.environ)
    # The VM test scripts' undefined-name check uses ruff when it is on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [sys.executable, str(tool), "--json", str(out), str(flake)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert out.is_file(), f"nixos-eval wrote no report (exit {done.returncode}):\n{done.stdout}"
    data: dict[str, Any] = json.loads(out.read_text())
    data["_output"] = done.stdout + done.stderr
    data["_returncode"] = done.returncode
    return data
