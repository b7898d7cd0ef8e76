"""`hydra-health`: run | check | gate | alerts | deploy."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from hydra_fleet.core.cli import run_command
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.server import serve
from hydra_fleet.health import deploy as deploy_mod
from hydra_fleet.health.agent import DB_NAME, Agent
from hydra_fleet.health.app import make_app
from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.config import WEEK, HealthConfig, load_config
from hydra_fleet.health.gate import run_gate
from hydra_fleet.health.store import Store, open_store

log = get_logger("hydra.health")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON configuration file",
)
state_option = click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="overrides stateDir"
)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """click's FloatRange lets NaN through (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number of seconds, got {value}", ctx, param)
    return value


def _load(config_file: Path | None, **overrides: object) -> HealthConfig:
    return load_config(config_file, overrides)


@click.group()
def main_group() -> None:
    """hydra health agent: checks, budgeted remediation, durable alerts, deploy gate."""


@main_group.command()
@config_option
@state_option
@click.option("--listen", help="HOST:PORT (overrides listenAddress and port)")
def run(config_file: Path | None, state_dir: Path | None, listen: str | None) -> int:
    """Run the agent: checks, remediation, alert delivery, /metrics, /status."""
    host = port = None
    if listen is not None:
        from hydra_fleet.core.config import parse_host_port  # noqa: PLC0415

        try:
            host, port = parse_host_port(listen)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--listen") from None
    config = _load(
        config_file,
        stateDir=str(state_dir) if state_dir else None,
        listenAddress=host,
        port=port,
    )

    async def main() -> None:
        agent = Agent(config)
        try:
            await serve(make_app(agent), config.listen_address, config.port, on_started=agent.start)
        finally:
            await agent.stop()

    asyncio.run(main())
    return 0


@main_group.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print a JSON report")
@click.option(
    "--static",
    is_flag=True,
    help="validate the configuration only (exit 0 or 78); run no check (for build-time checks)",
)
def check(config_file: Path | None, as_json: bool, static: bool) -> int:
    """Run every check once; exit 0 when all pass, 1 otherwise (--static: validate only,
    reading no secret file: at build time none exists)."""
    if static:
        config = load_config(config_file, read_secrets=False)
        click.echo(f"{config_file or '(no config file)'}: ok, {len(config.checks)} checks")
        return 0
    config = _load(config_file)

    async def main() -> dict[str, tuple[bool, str, float]]:
        ctx = CheckContext.create(config.systemctl)
        try:
            names = list(config.checks)
            results = await asyncio.gather(*(run_check(config.checks[n], ctx) for n in names))
        finally:
            await ctx.close()
        return {n: (r.ok, r.detail, r.duration) for n, r in zip(names, results, strict=True)}

    results = asyncio.run(main())
    if as_json:
        report = {
            n: {"ok": ok, "detail": d, "durationSeconds": round(t, 4)}
            for n, (ok, d, t) in results.items()
        }
        click.echo(json.dumps({"ok": all(r[0] for r in results.values()), "checks": report}))
    else:
        for name, (ok, detail, took) in results.items():
            click.echo(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}  ({took * 1000:.0f} ms)")
    return 0 if all(r[0] for r in results.values()) else 1


@main_group.command()
@config_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=WEEK),
    callback=_finite,
    help="seconds (default gate.timeout)",
)
@click.option("--passes", type=click.IntRange(min=1), help="passes in a row (default gate.passes)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON report")
@click.option("--allow-missing", is_flag=True, help="a missing config file passes (no checks)")
def gate(
    config_file: Path | None,
    timeout: float | None,
    passes: int | None,
    as_json: bool,
    allow_missing: bool,
) -> int:
    """Wait until every check passes N times in a row; exit 0, or 1 at the timeout."""
    if allow_missing and config_file is not None and not config_file.exists():
        click.echo(f"hydra-health: {config_file} does not exist; nothing to gate", err=True)
        if as_json:
            click.echo(json.dumps({"ok": True, "passed": [], "failed": {}}))
        return 0
    config = _load(config_file)
    want = passes or config.gate.passes
    limit = timeout or config.gate.timeout
    started = time.monotonic()
    result = asyncio.run(run_gate(config.checks, want, limit, systemctl=config.systemctl))
    took = time.monotonic() - started
    if as_json:
        click.echo(json.dumps(result.to_json()))
    if result.ok:
        click.echo(f"gate passed: {len(result.passed)} checks, {took:.1f} s", err=True)
        return 0
    click.echo(f"gate failed after {took:.1f} s:", err=True)
    for name, detail in result.failed.items():
        click.echo(f"  {name}: {detail}", err=True)
    return 1


@main_group.group(invoke_without_command=True)
@config_option
@state_option
@click.pass_context
def alerts(ctx: click.Context, config_file: Path | None, state_dir: Path | None) -> None:
    """Inspect the alert outbox (default: list)."""
    config = _load(config_file, stateDir=str(state_dir) if state_dir else None)
    ctx.obj = open_store(config.state_dir / DB_NAME, repair=False)
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        ctx.invoke(alerts_list)


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def alerts_list(store: Store, as_json: bool = False) -> int:
    """Every alert and its delivery state per sink, newest first."""
    rows = store.listing()
    if as_json:
        click.echo(json.dumps(rows))
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["created_at"]))
        state = "delivered" if row["delivered_at"] else f"pending ({row['attempts']} tries)"
        error = f"  last error: {row['last_error']}" if row["last_error"] else ""
        click.echo(
            f"{row['id']:>5}  {when}Z  {row['status']:<8}  {row['labels'].get('alertname', '')}"
            f" {row['labels'].get('check', '')}  -> {row['sink']}: {state}{error}"
        )
    return 0


@alerts.command("retry")
@click.pass_obj
def alerts_retry(store: Store) -> int:
    """Make every undelivered alert due now (the running agent sends it on its next round)."""
    count = store.retry_now()
    click.echo(f"{count} deliveries due now")
    return 0


@main_group.group()
def deploy() -> None:
    """Health-gated switch and rollback of the NixOS system."""


def _deployer(target_host: str | None, sudo: bool) -> deploy_mod.Deployer:
    return deploy_mod.Deployer(deploy_mod.Tools.from_env(), target_host=target_host, sudo=sudo)


@deploy.command()
@click.option("--flake", required=True, help="FLAKE#HOST")
@click.option("--target-host", help="ssh destination; remote steps run over ssh")
@click.option("--gate-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True)
@click.option("--show-trace", is_flag=True, help="passed to nix build")
@click.option("--ignore-failed-units", is_flag=True, help="exit 4 of switch-to-configuration")
@click.option("--sudo", is_flag=True, help="run privileged remote steps with sudo")
@click.option(
    "--no-transient-unit", is_flag=True, help="do not move activation into a transient unit"
)
def switch(  # noqa: PLR0917 - click passes every option as an argument
    flake: str,
    target_host: str | None,
    gate_timeout: float,
    show_trace: bool,
    ignore_failed_units: bool,
    sudo: bool,
    no_transient_unit: bool,
) -> int:
    """Build, activate (test), gate, then make it the boot default, or roll back."""
    deployer = _deployer(target_host, sudo)
    new = deployer.build(flake, show_trace)
    print(f"hydra-health: built {new}", file=sys.stderr)
    if target_host or no_transient_unit or deploy_mod.in_transient_unit():
        return deployer.activate_and_gate(
            new, gate_timeout, ignore_failed_units=ignore_failed_units
        )
    args = ["deploy", "activate", "--system", new, "--gate-timeout", f"{gate_timeout:g}"]
    if ignore_failed_units:
        args.append("--ignore-failed-units")
    argv = deploy_mod.transient_argv(deployer.tools, args)
    log.info("moving activation into a transient unit", argv=" ".join(argv))
    return subprocess.run(argv, check=False).returncode


@deploy.command(hidden=True)
@click.option("--system", required=True, help="store path of the built system")
@click.option("--gate-timeout", type=click.FloatRange(min=1), default=300.0)
@click.option("--ignore-failed-units", is_flag=True)
def activate(system: str, gate_timeout: float, ignore_failed_units: bool) -> int:
    """(internal) The activation and gate half of `switch`, run inside the transient unit."""
    deployer = _deployer(None, sudo=False)
    return deployer.activate_and_gate(system, gate_timeout, ignore_failed_units=ignore_failed_units)


@deploy.command()
@click.option("--target-host", help="ssh destination")
@click.option("--sudo", is_flag=True, help="run privileged remote steps with sudo")
def rollback(target_host: str | None, sudo: bool) -> int:
    """Go back one generation: `nix-env --rollback` on the system profile, then switch."""
    local_sudo = target_host is None and _not_root()
    return _deployer(target_host, sudo or local_sudo).rollback()


def _not_root() -> bool:
    import os  # noqa: PLC0415

    return os.geteuid() != 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(main_group, "hydra-health", argv)


if __name__ == "__main__":
    sys.exit(main())
