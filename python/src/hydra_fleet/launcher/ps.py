"""`hydra-launch ps`: what is loaded where, `ollama ps`-style, from the running health agent.

The agent knows each instance's config (`instancesFile`), its readiness check (state, ready
since) and the exporter's VRAM per systemd unit; `ps` prints that table, for this host or,
with `--fleet`, for every host in the agent's `fleet` list.
"""

from __future__ import annotations

import json
import time

import click

from hydra_fleet.core.fetch import get_json
from hydra_fleet.core.report import columns, ps_rows, url_of

EPILOG = """\b
Examples:
  hydra-launch ps                          # engines on this host
  hydra-launch ps --fleet                  # engines on every host of the fleet
  hydra-launch ps --json | jq '.instances[] | {name, state, vramBytes}'
  hydra-launch ps --agent http://hydra-ai:9446

\b
Exit codes: 0 listed; 69 the health agent does not answer."""


@click.command("ps", epilog=EPILOG)
@click.option(
    "--agent",
    "agent",
    envvar="HYDRA_AGENT_URL",
    help="health agent base URL (default: from /etc/hydra-health/config.json, "
    "else http://127.0.0.1:9446)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (camelCase keys)")
@click.option("--fleet", "of_fleet", is_flag=True, help="every host of the agent's fleet list")
def ps(agent: str | None, as_json: bool, of_fleet: bool) -> int:
    """List the engine instances: engine, model, context, GPUs, VRAM held, state, ready since."""
    base = url_of(None, agent)
    now = time.time()
    if not of_fleet:
        status = get_json(base + "/status")
        instances = status.get("instances", [])
        if as_json:
            click.echo(json.dumps({"host": status.get("host"), "instances": instances}))
        elif instances:
            click.echo("\n".join(columns(ps_rows(instances, status.get("generatedAt") or now))))
        else:
            click.echo(f"no engine instances known to the agent at {base} (instancesFile unset?)")
        return 0
    data = get_json(base + "/fleet")
    hosts = [
        {
            "host": h["name"],
            "answered": h["answered"],
            "error": h["error"],
            "instances": (h.get("status") or {}).get("instances", []),
        }
        for h in data["hosts"]
    ]
    if as_json:
        click.echo(json.dumps({"hosts": hosts}))
        return 0
    rows: list[list[str]] = []
    for h in hosts:
        if not h["answered"]:
            continue
        table = ps_rows(h["instances"], now, host=h["host"])
        rows += table if not rows else table[1:]
    if rows:
        click.echo("\n".join(columns(rows)))
    for h in hosts:
        if not h["answered"]:
            click.echo(f"{h['host']}: NO ANSWER ({h['error']})")
    return 0
