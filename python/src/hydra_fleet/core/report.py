"""Plain-text building blocks shared by `hydra-health status` and `hydra-launch ps`.

Light on imports on purpose: `hydra-launch` loads this with every start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_fleet.core.config import read_json
from hydra_fleet.core.fetch import DEFAULT_AGENT_URL, agent_url
from hydra_fleet.core.html import ago

FAILING = ("down", "flapping", "blocked")


def failing_checks(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: c for n, c in status.get("checks", {}).items() if c.get("state") in FAILING}


def alerts_waiting(status: dict[str, Any]) -> int:
    return sum(int(s.get("waiting", 0)) for s in status.get("outbox", {}).values())


DEFAULT_CONFIG = Path("/etc/hydra-health/config.json")


def resolve_config(config_file: Path | None) -> Path | None:
    """`--config`, else /etc/hydra-health/config.json when it exists (as on a fleet host)."""
    if config_file is not None:
        return config_file
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def url_of(config_file: Path | None, url: str | None) -> str:
    """`--url`, else the agent's listen address and port from the config, else the default."""
    if url:
        return url.rstrip("/")
    config_file = resolve_config(config_file)
    if config_file is None:
        return DEFAULT_AGENT_URL
    data = read_json(config_file)
    return agent_url(str(data.get("listenAddress", "127.0.0.1")), int(data.get("port", 9446)))


def cut(text: object, width: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def ps_rows(
    instances: list[dict[str, Any]], now: float, host: str | None = None
) -> list[list[str]]:
    """`ollama ps`-style rows (with a header) of the engine instances in a status."""
    head = ["NAME", "ENGINE", "MODEL", "CONTEXT", "GPUS", "VRAM", "STATE", "READY SINCE"]
    rows = [(["HOST"] if host is not None else []) + head]
    for i in instances:
        gpus = ",".join(f"{g['vendor']}:{g['index']}" for g in i["gpus"]) or "-"
        vram = ", ".join(f"{v['gpu']} {v['memoryBytes'] / 1024**3:.1f} GiB" for v in i["vram"])
        ready = ago(now - i["readySince"]) + " ago" if i.get("readySince") else "-"
        state = i["state"].upper() if i["state"] in FAILING else i["state"]
        row = [
            i["name"],
            str(i["engine"]),
            cut(i["model"], 40),
            str(i["contextLength"] or "-"),
            gpus,
            vram or "-",
            state,
            ready,
        ]
        rows.append(([host] if host is not None else []) + row)
    return rows
