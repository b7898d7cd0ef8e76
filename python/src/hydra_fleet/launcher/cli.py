"""hydra-launch: `run`, `plan` and `check` for one engine instance."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import click

from hydra_fleet import __version__
from hydra_fleet.core.cli import run_command
from hydra_fleet.core.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL
from hydra_fleet.core.log import get_logger
from hydra_fleet.launcher import config, plan, preflight, supervisor
from hydra_fleet.launcher.engines import launch_spec
from hydra_fleet.launcher.exposure import exposure_warning
from hydra_fleet.launcher.gpu_probe import GpuProbe, probe_for
from hydra_fleet.launcher.ps import ps

log = get_logger("hydra.launch")

CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Instance config (JSON).",
)


def _probe(instance: config.Instance) -> GpuProbe | None:
    return probe_for(instance.vendor) if instance.vendor else None


def _warn_exposure(instance: config.Instance) -> None:
    warning = exposure_warning(instance)
    if warning:
        log.warning(warning)


EPILOG = """\b
Examples:
  hydra-launch plan --config python/examples/instance-llama-cpp.json
  hydra-launch check --config /etc/hydra-inference/llm.json
  hydra-launch ps                   # what is loaded where (from the health agent)

\b
Exit codes: 0 ok; 1 the engine died; 64 usage error; 69 the agent does not answer (ps);
75 preflight says wait (GPU not visible, VRAM held by another process); 78 invalid
config, or the model does not fit."""


@click.group(epilog=EPILOG)
@click.version_option(__version__, prog_name="hydra-launch")
def cli() -> None:
    """Start one inference engine pinned to its GPUs, after a preflight.

    The instance config keys are documented by the files in python/examples/.
    """


cli.add_command(ps)


@cli.command(
    epilog="\b\nExample:\n  hydra-launch check --config python/examples/instance-ollama.json"
)
@CONFIG
def check(config_path: Path) -> int:
    """Validate the config only."""
    instance = config.load(config_path)
    _warn_exposure(instance)
    config.check_api_key(instance, config_path, dict(os.environ), at_start=False)
    launch_spec(instance, preflight.run(instance, None).fit, dict(os.environ))
    click.echo(f"{config_path}: ok")
    return EX_OK


@cli.command(
    "plan",
    epilog="\b\nExamples:\n  hydra-launch plan --config python/examples/instance-tabbyapi.json"
    "\n  hydra-launch plan --config /etc/hydra-inference/llm.json --json | jq .fit",
)
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(config_path: Path, as_json: bool) -> int:
    """Show the argv, environment, probe and VRAM fit, without starting anything.

    Exit 0 when `run` would start, 78 when it would refuse, 75 when it would wait.
    """
    instance = config.load(config_path)
    _warn_exposure(instance)
    pre = preflight.run(instance, _probe(instance), check_port=True)
    spec = launch_spec(instance, pre.fit, dict(os.environ))
    click.echo(plan.as_json(pre, spec) if as_json else plan.as_text(pre, spec))
    if pre.fatal:
        return EX_CONFIG
    return EX_TEMPFAIL if pre.temporary else EX_OK


@cli.command(
    epilog="\b\nExample (as the unit runs it):\n"
    "  hydra-launch run --config /etc/hydra-inference/llm.json"
)
@CONFIG
def run(config_path: Path) -> int:
    """Preflight, start the engine, tell systemd when it is ready, supervise it."""
    instance = config.load(config_path)
    _warn_exposure(instance)
    config.check_api_key(instance, config_path, dict(os.environ), at_start=True)
    return asyncio.run(supervisor.run(instance, _probe(instance)))


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(cli, "hydra-launch", argv)
