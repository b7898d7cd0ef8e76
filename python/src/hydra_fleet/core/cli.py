"""Run a click command as `main() -> int`: operator errors become one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from hydra_fleet.core.errors import EX_CONFIG, EX_USAGE, HydraError, shorten
from hydra_fleet.core.log import setup_logging


def _one_line(text: str) -> str:
    return " ".join(shorten(text, 400).split())


def run_command(command: click.Command, prog: str, argv: Sequence[str] | None = None) -> int:
    """Invoke `command` without click's own `sys.exit`, and map errors to exit codes.

    A bad option value is a configuration error (78); an unknown option or command is a
    usage error (64); a `HydraError` prints its message and exits with its own code.
    """
    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.BadParameter as err:
        # one line, as a config error is: the option and the problem, no usage text
        click.echo(f"{prog}: {_one_line(err.format_message())}", err=True)
        return EX_CONFIG
    except click.UsageError as err:
        err.show()
        return EX_USAGE
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except HydraError as err:
        click.echo(f"{prog}: {err}", err=True)
        return err.exit_code
    return result if isinstance(result, int) else 0
