"""`hydra-health status`: the running agent's view, monit-style (`--json`, `--fleet`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from hydra_fleet.core.fetch import DEFAULT_AGENT_URL, get_json
from hydra_fleet.core.html import ago
from hydra_fleet.core.report import (
    FAILING,
    alerts_waiting,
    columns,
    cut,
    failing_checks,
    ps_rows,
    url_of,
)


def _restarts(rem: dict[str, Any] | None, now: float) -> str:
    if rem is None:
        return "-"
    text = f"{rem['restartsLeft']}/{rem['maxPerHour']} left"
    if rem.get("escalatedAt"):
        return text + ", EXHAUSTED (escalated)"
    if rem.get("nextAllowedAt"):
        text += f", next in {ago(rem['nextAllowedAt'] - now)}"
    return text


def render(status: dict[str, Any], url: str) -> str:
    now = status.get("generatedAt") or time.time()
    checks = status["checks"]
    bad = failing_checks(status)
    waiting = alerts_waiting(status)
    verdict = "healthy" if status["healthy"] else "UNHEALTHY"
    failing = f": {', '.join(sorted(bad))}" if bad else ""
    lines = [
        f"{status['host']}: {verdict}, {len(bad)} of {len(checks)} checks failing{failing}, "
        f"{waiting} alert{'s' if waiting != 1 else ''} waiting   ({url})",
        "",
    ]
    rows = [["CHECK", "STATE", "SINCE", "RESTARTS", "DETAIL"]]
    order = sorted(checks.items(), key=lambda item: (item[1]["state"] not in FAILING, item[0]))
    for name, c in order:
        state = c["state"].upper() if c["state"] in FAILING else c["state"]
        since = ago(now - c["since"]) + " ago" if c.get("since") else "-"
        rows.append(
            [name, state, since, _restarts(c.get("remediation"), now), cut(c["detail"], 70)]
        )
    lines += columns(rows) if checks else ["no checks configured"]
    instances = status.get("instances", [])
    if instances:
        lines += ["", *columns(ps_rows(instances, now))]
    gpus = status.get("gpus", [])
    exporter = status.get("exporter") or {}
    if gpus:
        rows = [["GPU", "STATE", "VRAM", "TEMP", "POWER", "HELD BY"]]
        for g in gpus:
            used, total = g.get("memoryUsedBytes"), g.get("memoryTotalBytes")
            vram = f"{used / 1024**3:.1f}/{total / 1024**3:.1f} GiB" if used and total else "-"
            temp = g.get("temperatureCelsius")
            power = g.get("powerWatts")
            held = ", ".join(f"{u['unit']} {u['memoryBytes'] / 1024**3:.1f}G" for u in g["units"])
            rows.append(
                [
                    f"{g['vendor']}:{g['index']} {g['name']}",
                    "up" if g["up"] else "DOWN",
                    vram,
                    "-" if temp is None else f"{temp:.0f}C",
                    "-" if power is None else f"{power:.0f}W",
                    held or "-",
                ]
            )
        lines += ["", *columns(rows)]
    elif exporter and not exporter.get("ok"):
        lines += ["", f"GPUs: exporter {exporter.get('url')}: {exporter.get('error')}"]
    outbox = status.get("outbox", {})
    if outbox:
        rows = [["SINK", "ALERTS WAITING", "OLDEST"]]
        for sink, s in outbox.items():
            oldest = ago(s["oldestAgeSeconds"]) if s["waiting"] else "-"
            rows.append([sink, str(s["waiting"]), oldest])
        lines += ["", *columns(rows)]
    waiting = status.get("waitingAlerts", [])
    if waiting:
        rows = [["NOT YET DELIVERED", "SINK", "TRIES", "LAST ERROR"]]
        for w in waiting[:5]:
            what = f"{w['alertname']} {w['check']} ({w['status']})"
            rows.append([what, w["sink"], str(w["attempts"]), cut(w["lastError"] or "-", 60)])
        lines += ["", *columns(rows)]
        if len(waiting) > 5:
            lines.append("... and more: hydra-health alerts list")
    return "\n".join(lines)


def render_fleet(data: dict[str, Any]) -> str:
    rows = [["HOST", "STATE", "GPUS UP", "ENGINES READY", "FAILING CHECKS", "ALERTS WAITING"]]
    for h in data["hosts"]:
        s = h.get("status")
        if not h["answered"] or s is None:
            rows.append([h["name"], "NO ANSWER", "-", "-", cut(h["error"], 60), "-"])
            continue
        gpus = s.get("gpus", [])
        inst = s.get("instances", [])
        rows.append(
            [
                h["name"],
                "healthy" if s.get("healthy") else "UNHEALTHY",
                f"{sum(1 for g in gpus if g['up'])}/{len(gpus)}",
                f"{sum(1 for i in inst if i['state'] == 'ready')}/{len(inst)}",
                ", ".join(sorted(failing_checks(s))) or "-",
                str(alerts_waiting(s)),
            ]
        )
    return "\n".join(columns(rows))


EPILOG = """\b
Examples:
  hydra-health status                      # the agent of this host
  hydra-health status --json | jq '.checks | map_values(.state)'
  hydra-health status --fleet              # every host in the agent's `fleet` list
  hydra-health status --url http://hydra-ai:9446

\b
Exit codes: 0 healthy (every host with --fleet), 1 a check is failing (or a host does not
answer with --fleet), 69 the agent does not answer, 78 the config file is invalid."""


@click.command(epilog=EPILOG)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="agent config, for its address (default /etc/hydra-health/config.json if present)",
)
@click.option(
    "--url", help=f"the agent's base URL (default from the config, else {DEFAULT_AGENT_URL})"
)
@click.option("--json", "as_json", is_flag=True, help="print the agent's /status JSON")
@click.option("--fleet", "of_fleet", is_flag=True, help="every host of the agent's fleet list")
def status(config_file: Path | None, url: str | None, as_json: bool, of_fleet: bool) -> int:
    """What the running agent sees: checks, since when, restarts left, engines, GPUs, alerts."""
    base = url_of(config_file, url)
    if of_fleet:
        data = get_json(base + "/fleet")
        click.echo(json.dumps(data) if as_json else render_fleet(data))
        hosts = data["hosts"]
        ok = all(h["answered"] and (h.get("status") or {}).get("healthy") for h in hosts)
        return 0 if ok else 1
    data = get_json(base + "/status")
    click.echo(json.dumps(data) if as_json else render(data, base))
    return 0 if data.get("healthy") else 1
