"""The flake's stand-in evaluation, run once for every fleet test that reads it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fleet.nixos_eval import REPO, run_tool


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The nixos-eval report of this repository's flake."""
    return run_tool(REPO, tmp_path_factory.mktemp("nixos-eval") / "report.json")
