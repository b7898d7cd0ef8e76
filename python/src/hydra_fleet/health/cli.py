"""`hydra-health`: run | check | gate | alerts."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from hydra_fleet import __version__
from hydra_fleet.core.cli import run_command
from hydra_fleet.core.config import camel
from hydra_fleet.core.errors import ConfigError
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.report import resolve_config
from hydra_fleet.core.server import serve
from hydra_fleet.health.agent import DB_NAME, Agent
from hydra_fleet.health.app import make_app
from hydra_fleet.health.checks import CheckContext, run_check
from hydra_fleet.health.config import WEEK, HealthConfig, load_config
from hydra_fleet.health.gate import run_gate
from hydra_fleet.health.status_cmd import status
from hydra_fleet.health.store import StateError, Store, open_store

log = get_logger("hydra.health")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON configuration file (default /etc/hydra-health/config.json when present)",
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
    return load_config(resolve_config(config_file), overrides)


def _require_checks(config_file: Path | None, config: HealthConfig, allow_empty: bool) -> None:
    if not config.checks and not allow_empty:
        source = resolve_config(config_file)
        raise ConfigError(
            str(source) if source else "(no config file)",
            "checks",
            "no checks configured: give --config FILE (a fleet host has "
            "/etc/hydra-health/config.json), or --allow-empty to accept none",
        )


allow_empty_option = click.option(
    "--allow-empty", is_flag=True, help="accept a config with no checks (then it passes)"
)

MAIN_EPILOG = """\b
Examples:
  hydra-health status                        # what the running agent sees
  hydra-health check --config health.json    # every check once, now
  hydra-health gate --timeout 120            # wait until every check passes
  hydra-health alerts list --json            # the outbox and each sink's delivery

\b
Exit codes: 0 ok; 1 a check failed (check, gate, status); 64 usage error;
69 the agent does not answer (status); 78 invalid configuration."""


@click.group(epilog=MAIN_EPILOG)
@click.version_option(__version__, prog_name="hydra-health")
def main_group() -> None:
    """hydra health agent: checks, budgeted remediation, durable alerts, deploy gate.

    Every command reads --config FILE, by default /etc/hydra-health/config.json when it
    exists (the file the NixOS module writes). The agent serves its status page at / and
    its JSON at /status (default http://127.0.0.1:9446).
    """


main_group.add_command(status)


@main_group.command(
    epilog="\b\nExamples:\n  hydra-health run --config python/examples/health-local.json"
    " --state-dir /tmp/hydra-health\n  hydra-health run --listen 0.0.0.0:9446"
)
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


@main_group.command(
    epilog="\b\nExamples:\n  hydra-health check\n  hydra-health check --config health.json --json"
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="print a JSON report")
@allow_empty_option
@click.option(
    "--static",
    is_flag=True,
    help="validate the configuration only (exit 0 or 78); run no check (for build-time checks)",
)
def check(config_file: Path | None, as_json: bool, allow_empty: bool, static: bool) -> int:
    """Run every check once; exit 0 when all pass, 1 otherwise (78: invalid config).

    --static validates only, reading no secret file (at build time none exists); a config
    with no checks is valid then."""
    if static:
        source = resolve_config(config_file)
        config = load_config(source, read_secrets=False)
        click.echo(f"{source or '(no config file)'}: ok, {len(config.checks)} checks")
        return 0
    config = _load(config_file)
    _require_checks(config_file, config, allow_empty)

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


@main_group.command(epilog="\b\nExamples:\n  hydra-health gate --timeout 300 --passes 3")
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
@allow_empty_option
def gate(  # noqa: PLR0917 - click passes every option as an argument
    config_file: Path | None,
    timeout: float | None,
    passes: int | None,
    as_json: bool,
    allow_missing: bool,
    allow_empty: bool,
) -> int:
    """Wait until every check passes N times in a row; exit 0, or 1 at the timeout."""
    if allow_missing and config_file is not None and not config_file.exists():
        click.echo(f"hydra-health: {config_file} does not exist; nothing to gate", err=True)
        if as_json:
            click.echo(json.dumps({"ok": True, "passed": [], "failed": {}}))
        return 0
    config = _load(config_file)
    _require_checks(config_file, config, allow_empty or allow_missing)
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


@main_group.group(
    invoke_without_command=True,
    epilog="\b\nExamples:\n  hydra-health alerts list --json\n  hydra-health alerts retry",
)
@config_option
@state_option
@click.pass_context
def alerts(ctx: click.Context, config_file: Path | None, state_dir: Path | None) -> None:
    """Inspect the alert outbox (default: list). --config/--state-dir go here or after."""
    ctx.obj = {"config_file": config_file, "state_dir": state_dir}
    if ctx.invoked_subcommand is None:
        ctx.invoke(alerts_list)


def _store_path(ctx: click.Context, config_file: Path | None, state_dir: Path | None) -> Path:
    given = ctx.obj or {}
    config_file = config_file or given.get("config_file")
    state_dir = state_dir or given.get("state_dir")
    config = _load(config_file, stateDir=str(state_dir) if state_dir else None)
    return config.state_dir / DB_NAME


def _open_existing(ctx: click.Context, path: Path) -> Store | None:
    """The state database when it exists; inspecting never creates it."""
    if not path.exists():
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise StateError(
                f"cannot open the state database {path}: {blocker} is not a directory "
                "(check stateDir / --state-dir)"
            )
        click.echo(f"hydra-health: no state database at {path} (the agent has not run)", err=True)
        return None
    store = open_store(path, repair=False)  # the agent repairs; inspecting never does
    ctx.call_on_close(store.close)
    return store


@alerts.command("list")
@config_option
@state_option
@click.option("--json", "as_json", is_flag=True, help="print JSON (camelCase keys)")
@click.pass_context
def alerts_list(
    ctx: click.Context,
    config_file: Path | None = None,
    state_dir: Path | None = None,
    as_json: bool = False,
) -> int:
    """Every alert and its delivery state per sink, newest first."""
    store = _open_existing(ctx, _store_path(ctx, config_file, state_dir))
    rows = store.listing() if store is not None else []
    if as_json:
        click.echo(json.dumps([{camel(k): v for k, v in row.items()} for row in rows]))
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
@config_option
@state_option
@click.pass_context
def alerts_retry(ctx: click.Context, config_file: Path | None, state_dir: Path | None) -> int:
    """Make every undelivered alert due now (the running agent sends it on its next round)."""
    store = _open_existing(ctx, _store_path(ctx, config_file, state_dir))
    count = store.retry_now() if store is not None else 0
    click.echo(f"{count} deliveries due now")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(main_group, "hydra-health", argv)


if __name__ == "__main__":
    sys.exit(main())
