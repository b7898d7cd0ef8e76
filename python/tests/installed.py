"""Run the package's commands as an installed package has them, wherever the tests run.

`make test` installs the console scripts into the venv, but the Nix builder's check phase runs
`python -m pytest` with only `$out`'s site-packages on `PYTHONPATH`: no script sits next to
`sys.executable` and `$out/bin` is not on `PATH`. Loading the entry point declared in the
installed distribution's metadata through this interpreter works in both, and still fails when
the metadata does not declare the command.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

LOADER = (
    "import sys; from importlib.metadata import entry_points; "
    "(ep,) = entry_points(group='console_scripts', name=sys.argv[1]); "
    "sys.argv = sys.argv[1:]; sys.exit(ep.load()())"
)


def command_argv(name: str) -> list[str]:
    """argv that runs the installed console script `name` (e.g. "hydra-health")."""
    found = entry_points(group="console_scripts", name=name)
    assert found, f"{name} is not a console script of the installed hydra-fleet"
    return [sys.executable, "-c", LOADER, name]
