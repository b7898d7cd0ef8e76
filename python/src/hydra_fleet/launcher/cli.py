"""hydra-launch: `run`, `plan` and `check` for engine instances.

`check` and `plan` take several `--config`s: the instances are then also planned together
per GPU (the VRAM ledger), and a card they overcommit is refused (78) with the table.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click

from hydra_fleet import __version__
from hydra_fleet.core.cli import run_command
from hydra_fleet.core.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL, ConfigError, HydraError
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.sdnotify import Notifier
from hydra_fleet.launcher import config, ledger, plan, preflight, supervisor
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
CONFIGS = click.option(
    "--config",
    "config_paths",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    multiple=True,
    help="Instance config (JSON); repeat it to plan a host's instances together per GPU.",
)


def _probe(instance: config.Instance) -> GpuProbe | None:
    return probe_for(instance.vendor) if instance.vendor else None


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Errors raised deep down say "config"; name the file instead."""
    try:
        yield
    except ConfigError as err:
        if err.source == "config":
            raise ConfigError(str(path), err.field, err.problem) from None
        raise


def _load(path: Path) -> config.Instance:
    with _naming(path):
        instance = config.load(path)
    _warn_exposure(instance)
    return instance


def _warn_exposure(instance: config.Instance) -> None:
    warning = exposure_warning(instance)
    if warning:
        log.warning(warning)


EPILOG = """\b
Examples:
  hydra-launch plan --config python/examples/instance-llama-cpp.json
  hydra-launch check --config /etc/hydra-inference/llm.json
  hydra-launch check --static --config a.json --config b.json   # a host's instances together
  hydra-launch ps                   # what is loaded where (from the health agent)

\b
Exit codes: 0 ok; 1 the engine died; 64 usage error; 69 the agent does not answer (ps);
75 preflight says wait (GPU not visible, VRAM held by another process); 78 invalid
config, the model does not fit, or the instances overcommit a GPU."""


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
@CONFIGS
@click.option(
    "--static",
    is_flag=True,
    help="Validate and plan from the configs alone: read no secret, model file, GPU or port "
    "(the build-time check; modelInfo gives the model's size).",
)
def check(config_paths: tuple[Path, ...], static: bool) -> int:
    """Validate each config (exit 0 or 78) and plan the instances together per GPU."""
    instances = []
    for path in config_paths:
        instance = _load(path)
        with _naming(path):
            if not static:
                config.check_api_key(instance, path, dict(os.environ), at_start=False)
            pre = preflight.run(instance, None, static=static)
            launch_spec(instance, pre.fit, dict(os.environ))
        if pre.fatal:
            click.echo(f"hydra-launch: {path}: " + "; ".join(pre.fatal), err=True)
            return EX_CONFIG
        instances.append(instance)
    cards = [c for c in ledger.build(instances, read_files=not static) if len(c.holds) > 1]
    if cards:
        click.echo("\n".join(["gpus (all instances together)", *ledger.table(cards)]))
    if problems := ledger.problems(cards):
        for problem in problems:
            click.echo(f"hydra-launch: {problem}", err=True)
        return EX_CONFIG
    for path in config_paths:
        click.echo(f"{path}: ok")
    return EX_OK


@cli.command(
    "plan",
    epilog="\b\nExamples:\n  hydra-launch plan --config python/examples/instance-tabbyapi.json"
    "\n  hydra-launch plan --config /etc/hydra-inference/llm.json --json | jq .fit",
)
@CONFIGS
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(config_paths: tuple[Path, ...], as_json: bool) -> int:
    """Show the argv, environment, probes and VRAM fit, without starting anything.

    Several configs: each plan, then the per-GPU ledger of all of them. Exit 0 when `run`
    would start, 78 when it would refuse (or a card is overcommitted), 75 when it would wait.
    """
    results = []
    instances = []
    code = EX_OK
    for path in config_paths:
        instance = _load(path)
        with _naming(path):
            siblings = ledger.load_siblings(instance, str(path))
            pre = preflight.run(instance, _probe(instance), check_port=True, siblings=siblings)
            features = supervisor.features_for(instance, pre, dict(os.environ))
            spec = launch_spec(instance, pre.fit, dict(os.environ), features=features)
        results.append((pre, spec))
        instances.append(instance)
        if pre.fatal:
            click.echo(f"hydra-launch: {path}: " + "; ".join(pre.fatal), err=True)
            code = EX_CONFIG
        elif pre.temporary and code == EX_OK:
            code = EX_TEMPFAIL
    cards = ledger.build(instances, read_files=True) if len(instances) > 1 else []
    problems = ledger.problems(cards)
    if problems:
        code = EX_CONFIG
    if as_json:
        if len(results) == 1:
            click.echo(plan.as_json(*results[0]))
        else:
            body = {
                "instances": [plan.as_dict(pre, spec) for pre, spec in results],
                "gpus": ledger.as_dict(cards),
                "problems": problems,
            }
            click.echo(json.dumps(body, indent=2))
    else:
        texts = [plan.as_text(pre, spec) for pre, spec in results]
        if cards:
            texts.append("\n".join(["gpus (all instances together)", *ledger.table(cards)]))
            texts += [f"refused (78): {problem}" for problem in problems]
        click.echo("\n\n".join(texts))
    return code


@cli.command(
    epilog="\b\nExample (as the unit runs it):\n"
    "  hydra-launch run --config /etc/hydra-inference/llm.json"
)
@CONFIG
def run(config_path: Path) -> int:
    """Preflight, start the engine, tell systemd when it is ready, supervise it."""
    try:
        instance = _load(config_path)
        with _naming(config_path):
            config.check_api_key(instance, config_path, dict(os.environ), at_start=True)
            siblings = ledger.load_siblings(instance, str(config_path))
    except HydraError as err:
        Notifier().status(f"refused ({err.exit_code}): {err}"[:400])
        raise
    with _naming(config_path):
        return asyncio.run(
            supervisor.run(instance, _probe(instance), source=str(config_path), siblings=siblings)
        )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(cli, "hydra-launch", argv)
