"""`hydra-gpu-exporter`: serve GPU metrics for Prometheus."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from pathlib import Path

import click

from hydra_fleet import __version__
from hydra_fleet.core.cli import run_command
from hydra_fleet.core.config import load, parse_host_port
from hydra_fleet.core.log import get_logger
from hydra_fleet.core.server import serve
from hydra_fleet.exporter.app import Exporter, make_app
from hydra_fleet.exporter.backends import build_backends
from hydra_fleet.exporter.config import BACKEND_NAMES, ExporterConfig

log = get_logger("hydra.exporter")


def _listen(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_host_port(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from err


def _backends(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> list[str] | None:
    names = [n.strip() for item in value for n in item.split(",") if n.strip()]
    for name in names:
        if name not in BACKEND_NAMES:
            raise click.BadParameter(
                f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}", ctx, param
            )
    return names or None


EPILOG = """\b
Examples:
  hydra-gpu-exporter                                    # every GPU vendor found, :9445
  hydra-gpu-exporter --config python/examples/exporter-synthetic.json --backend synthetic
  hydra-gpu-exporter --listen 0.0.0.0:9445 --backend nvml,amdgpu
  curl -s localhost:9445/metrics | grep hydra_gpu_memory_used_bytes

\b
Open http://127.0.0.1:9445/ in a browser for the GPU table.
Exit codes: 0 stopped cleanly; 64 usage error; 75 the port stayed busy; 78 invalid config."""


@click.command(help="Serve Prometheus metrics for the GPUs of this host.", epilog=EPILOG)
@click.version_option(__version__, prog_name="hydra-gpu-exporter")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON configuration file (keys as in services.hydra-gpu-exporter).",
)
@click.option("--listen", callback=_listen, metavar="HOST:PORT", help="Default 127.0.0.1:9445.")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    callback=_backends,
    metavar="NAME[,NAME]",
    help=f"Repeatable or comma-separated: {'|'.join(BACKEND_NAMES)}. Overrides the config.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate the configuration and exit (0, or 78 naming file and field); "
    "touches no GPU, sysfs path or port.",
)
def command(
    config_file: Path | None,
    listen: tuple[str, int] | None,
    backends: list[str] | None,
    check: bool,
) -> int:
    overrides: dict[str, object] = {"backends": backends}
    if listen is not None:
        overrides["listenAddress"], overrides["port"] = listen
    config = load(ExporterConfig, config_file, overrides)
    source = str(config_file) if config_file else "(no config file)"
    if check:
        click.echo(f"{source}: configuration is valid")
        return 0
    exporter = Exporter(
        build_backends(config, source), dict(config.expected_devices), config.collect_timeout
    )

    async def first_collection() -> None:
        # Warm up (NVML handles, sysfs) before systemd hears READY=1.
        await exporter.scrape()
        # Everything loaded so far lives for the whole run: keep it out of the GC's scans,
        # which otherwise add milliseconds to the slowest scrapes.
        gc.freeze()

    asyncio.run(
        serve(
            make_app(exporter),
            config.listen_address,
            config.port,
            on_started=first_collection,
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(command, "hydra-gpu-exporter", argv)
