"""`hydra-deploy`: switch | rollback (and the host's side: host switch | rescue | rollback)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from hydra_fleet.core.cli import run_command
from hydra_fleet.core.log import setup_logging
from hydra_fleet.deploy.codes import EXIT_HELP
from hydra_fleet.deploy.tools import Tools

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT, epilog=EXIT_HELP)
def main_group() -> None:
    """Health-gated NixOS deploys that cannot strand a host.

    \b
    Examples:
      hydra-deploy switch --flake .#hydra-ai
      hydra-deploy switch --flake .#l --target-host root@192.168.1.30
      hydra-deploy rollback --target-host root@hydra-compute
    """


def _flake(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    # checked here, not with required=True: a missing option is a usage error (64), not 78
    if value is None:
        raise click.UsageError("Missing option '--flake' (FLAKE#HOST, e.g. .#hydra-ai)")
    ref, sep, host = value.partition("#")
    if not sep or not host:
        raise click.UsageError(f"--flake {value!r}: expected FLAKE#HOST, e.g. .#hydra-ai")
    del ref
    return value


@main_group.command(epilog=EXIT_HELP)
@click.option("--flake", callback=_flake, help="FLAKE#HOST, e.g. .#hydra-ai  [required]")
@click.option("--target-host", help="ssh destination (default: this machine)")
@click.option("--sudo", is_flag=True, help="run the host's steps with sudo (a non-root login)")
@click.option(
    "--gate-timeout",
    type=click.FloatRange(min=1),
    help="seconds the gate may take [default: the host's gate.timeout, else 300]",
)
@click.option(
    "--activation-timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="seconds switch-to-configuration may take",
)
@click.option(
    "--deadman-margin",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="the dead-man timer fires this long after activation + gate timeouts",
)
@click.option("--show-trace", is_flag=True, help="passed to nix build")
@click.option(
    "--ignore-failed-units", is_flag=True, help="exit 4 of switch-to-configuration passes"
)
def switch(  # noqa: PLR0917 - click passes every option as an argument
    flake: str,
    target_host: str | None,
    sudo: bool,
    gate_timeout: float | None,
    activation_timeout: float,
    deadman_margin: float,
    show_trace: bool,
    ignore_failed_units: bool,
) -> int:
    """Build, diff, copy, then on the host: activate, gate, commit or roll back.

    Everything after the copy runs on the host in one transient unit with a dead-man timer:
    stopping this command, closing the terminal or losing the connection changes nothing there.
    """
    from hydra_fleet.deploy.operator import Operator  # noqa: PLC0415

    return Operator(Tools.from_env(), target_host, sudo).switch(
        flake,
        show_trace=show_trace,
        gate_timeout=gate_timeout,
        activation_timeout=activation_timeout,
        margin=deadman_margin,
        ignore_failed_units=ignore_failed_units,
    )


@main_group.command(epilog=EXIT_HELP)
@click.option("--target-host", help="ssh destination (default: this machine)")
@click.option("--sudo", is_flag=True, help="run the host's steps with sudo (a non-root login)")
def rollback(target_host: str | None, sudo: bool) -> int:
    """Re-activate the profile's generation if something else runs, else the one before it."""
    from hydra_fleet.deploy.operator import Operator  # noqa: PLC0415

    return Operator(Tools.from_env(), target_host, sudo).rollback()


@main_group.group(hidden=True)
def host() -> None:
    """(internal) The host's side, run in a transient unit."""
    setup_logging("warning")


@host.command("switch")
@click.option("--id", "deploy_id", required=True)
@click.option("--system", required=True)
@click.option("--holder", default="?")
@click.option("--gate-timeout", type=click.FloatRange(min=1))
@click.option("--activation-timeout", type=click.FloatRange(min=1), default=600.0)
@click.option("--margin", type=click.FloatRange(min=0), default=60.0)
@click.option("--ignore-failed-units", is_flag=True)
def host_switch(  # noqa: PLR0917 - click passes every option as an argument
    deploy_id: str,
    system: str,
    holder: str,
    gate_timeout: float | None,
    activation_timeout: float,
    margin: float,
    ignore_failed_units: bool,
) -> int:
    from hydra_fleet.deploy.host import Host, SwitchOptions  # noqa: PLC0415

    options = SwitchOptions(
        deploy_id, system, holder, gate_timeout, activation_timeout, margin, ignore_failed_units
    )
    return Host(Tools.from_env()).switch(options)


@host.command("rescue")
@click.option("--id", "deploy_id", required=True)
@click.option("--activation-timeout", type=click.FloatRange(min=1), default=600.0)
def host_rescue(deploy_id: str, activation_timeout: float) -> int:
    from hydra_fleet.deploy.host import Host  # noqa: PLC0415

    worker = Host(Tools.from_env())
    worker.activation_timeout = activation_timeout
    return worker.rescue(deploy_id)


@host.command("recover")
@click.option("--id", "deploy_id")
def host_recover(deploy_id: str | None) -> int:
    """Resolve a deploy cut short by a restart or a crash."""
    from hydra_fleet.deploy.host import Host  # noqa: PLC0415

    return Host(Tools.from_env()).recover(deploy_id)


@host.command("rollback")
@click.option("--id", "deploy_id", required=True)
@click.option("--holder", default="?")
def host_rollback(deploy_id: str, holder: str) -> int:
    from hydra_fleet.deploy.host import Host  # noqa: PLC0415

    return Host(Tools.from_env()).rollback(deploy_id, holder)


def main(argv: Sequence[str] | None = None) -> int:
    code = run_command(main_group, "hydra-deploy", argv)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
