"""`hydra-deploy`'s command line: usage errors are 64, bad values 78, and --help documents
every exit code."""

from __future__ import annotations

import subprocess

import pytest

from hydra_fleet.deploy.cli import main
from hydra_fleet.deploy.codes import Exit
from tests.installed import command_argv


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["switch", "--flake", "hydra-ai"], 64, "expected FLAKE#HOST"),
        (["switch"], 64, "Missing option '--flake'"),
        (["swich"], 64, "No such command"),
        (["switch", "--flake", ".#l", "--gate-timeout", "0"], 78, "--gate-timeout"),
    ],
)
def test_operator_errors_exit_with_their_code(
    argv: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    assert says in capsys.readouterr().err


def test_help_lists_every_exit_code() -> None:
    done = subprocess.run(
        [*command_argv("hydra-deploy"), "switch", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for code in Exit:
        assert f"\n  {int(code):<3}" in done.stdout or f" {int(code)} " in done.stdout, code
    assert "rolled back" not in done.stderr
