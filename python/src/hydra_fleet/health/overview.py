"""What `/status`, `/`, `/fleet`, `hydra-health status` and `hydra-launch ps` show.

`agent.status()` holds the checks as the state machine sees them; this adds what an operator
asks next: since when (wall clock), restarts left in the budget and when the next is allowed,
alerts waiting per sink, the engine instances of the host and the GPUs from the local
exporter. Everything here only reads: a slow or absent exporter costs one line, not the page.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from hydra_fleet import __version__
from hydra_fleet.core.gpu_metrics import parse_gpus
from hydra_fleet.health.agent import Agent
from hydra_fleet.health.config import FleetMember, HealthConfig
from hydra_fleet.health.remediation import service_of
from hydra_fleet.health.store import Store

FETCH_TIMEOUT = 3.0
# How an engine instance's check and unit are named by the health and inference modules.
INSTANCE_CHECK = "inference-{}"
INSTANCE_UNIT = "hydra-inference-{}.service"
ENGINE_STATE = {"up": "ready", "pending": "starting", "down": "down"}


def exporter_base(config: HealthConfig) -> str | None:
    """`exporterUrl`, else scheme://host:port of the first `gpu` check's URL."""
    if config.exporter_url:
        return config.exporter_url.rstrip("/")
    for check in config.checks.values():
        if check.type == "gpu" and check.url:
            found = re.match(r"(https?://[^/]+)", check.url)
            if found:
                return found.group(1)
    return None


async def fetch_gpus(base: str | None, session: aiohttp.ClientSession) -> dict[str, Any]:
    """The exporter's GPU table, or why there is none."""
    if base is None:
        return {"url": None, "ok": False, "error": "no exporter configured", "gpus": []}
    url = f"{base}/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as resp:
            if resp.status != 200:
                return {"url": url, "ok": False, "error": f"HTTP {resp.status}", "gpus": []}
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as err:
        why = str(err) or type(err).__name__
        return {"url": url, "ok": False, "error": why, "gpus": []}
    return {"url": url, "ok": True, "error": None, **parse_gpus(text)}


def read_instances(file: Path | None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """name -> launcher config from `instancesFile`, and an error line when unreadable."""
    if file is None:
        return {}, None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {}, f"cannot read {file}: {getattr(err, 'strerror', None) or err}"
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return {}, f"{file}: expected an object of instance name -> launcher config"
    return data, None


def _instance(
    name: str, cfg: dict[str, Any], checks: dict[str, Any], gpus: list[dict[str, Any]]
) -> dict[str, Any]:
    unit = INSTANCE_UNIT.format(name)
    check = checks.get(INSTANCE_CHECK.format(name))
    state = "unknown" if check is None else ENGINE_STATE.get(check["state"], check["state"])
    vram = [
        {"gpu": f"{g['vendor']}:{g['index']}", "memoryBytes": u["memoryBytes"]}
        for g in gpus
        for u in g.get("units", [])
        if u["unit"] == unit
    ]
    pinned = [
        {"vendor": g.get("vendor"), "index": g.get("index"), "model": g.get("model")}
        for g in cfg.get("gpus", [])
        if isinstance(g, dict)
    ]
    return {
        "name": name,
        "engine": cfg.get("engine"),
        "model": cfg.get("model") or " ".join(map(str, cfg.get("command", [])[:1])),
        "contextLength": cfg.get("contextLength"),
        "gpus": pinned,
        "listenAddress": cfg.get("listenAddress", cfg.get("host")),
        "port": cfg.get("port"),
        "unit": unit,
        "check": None if check is None else INSTANCE_CHECK.format(name),
        "state": state,
        "detail": None if check is None else check["detail"],
        "readySince": check["since"] if check is not None and check["state"] == "up" else None,
        "vram": vram,
        "vramBytes": sum(v["memoryBytes"] for v in vram),
    }


async def overview(agent: Agent, session: aiohttp.ClientSession) -> dict[str, Any]:
    """`agent.status()` plus since-when, budgets, outbox, instances and GPUs (JSON-ready)."""
    config = agent.config
    result = agent.status()
    wall, mono = agent.clock.wall(), agent.clock.monotonic()

    def to_wall(t: float | None) -> float | None:
        return None if t is None else round(wall - (mono - t), 3)

    gpus_task = asyncio.ensure_future(fetch_gpus(exporter_base(config), session))
    budget = config.budget
    for name, state in agent.states.items():
        entry = result["checks"].setdefault(name, {})
        entry["since"] = to_wall(state.last_change if state.last_change else agent.started_at)
        entry["lastRunAt"] = to_wall(state.last_run)
        if state.config.remediate is None or agent.store is None:
            entry["remediation"] = None
            continue
        service = service_of(name, state.config)
        attempts = await agent.store.call(Store.attempts_since, service, wall - budget.window)
        next_allowed, escalated_at = await agent.store.call(Store.service_state, service)
        entry["remediation"] = {
            "service": service,
            "action": state.config.remediate.action,
            "restartsLeft": max(0, budget.max_per_hour - len(attempts)),
            "maxPerHour": budget.max_per_hour,
            "nextAllowedAt": next_allowed if next_allowed > wall else None,
            "escalatedAt": escalated_at,
        }
    stats = await agent.store.call(Store.outbox_stats, wall) if agent.store is not None else {}
    sinks = agent.outbox.sink_names if agent.outbox is not None else config.alerts.sinks.names()
    result["outbox"] = {
        sink: {
            "waiting": stats.get(sink, (0, 0.0))[0],
            "oldestAgeSeconds": stats.get(sink, (0, 0.0))[1],
        }
        for sink in sorted(set(sinks) | set(stats))
    }
    result["waitingAlerts"] = await _waiting(agent)
    exporter = await gpus_task
    result["exporter"] = {k: exporter[k] for k in ("url", "ok", "error")}
    result["gpus"] = exporter["gpus"]
    result["expectedDevices"] = exporter.get("expectedDevices", {})
    instances, problem = read_instances(config.instances_file)
    result["instances"] = [
        _instance(name, cfg, result["checks"], exporter["gpus"])
        for name, cfg in sorted(instances.items())
    ]
    result["instancesError"] = problem
    result["fleet"] = [{"name": m.name, "url": m.url} for m in config.fleet]
    result["generatedAt"] = round(wall, 3)
    result["version"] = __version__
    return result


WAITING_SHOWN = 20


async def _waiting(agent: Agent) -> list[dict[str, Any]]:
    """The newest undelivered alerts, per sink: what, since when, tries, the last error."""
    if agent.store is None:
        return []
    rows = await agent.store.call(Store.listing, 200)
    waiting = [r for r in rows if r["delivered_at"] is None][:WAITING_SHOWN]
    return [
        {
            "id": r["id"],
            "sink": r["sink"],
            "status": r["status"],
            "alertname": r["labels"].get("alertname", ""),
            "check": r["labels"].get("check", ""),
            "summary": r["annotations"].get("summary", ""),
            "createdAt": r["created_at"],
            "attempts": r["attempts"],
            "nextTry": r["next_try"],
            "lastError": r["last_error"],
        }
        for r in waiting
    ]


async def fetch_status(
    member: FleetMember, session: aiohttp.ClientSession, limit: float = FETCH_TIMEOUT
) -> dict[str, Any]:
    """One fleet member's `/status`, or why it did not answer."""
    url = member.url.rstrip("/") + "/status"
    base = {"name": member.name, "url": member.url}
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
            if resp.status != 200:
                return {**base, "answered": False, "error": f"HTTP {resp.status}", "status": None}
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        why = str(err) or type(err).__name__
        return {**base, "answered": False, "error": why, "status": None}
    return {**base, "answered": True, "error": None, "status": data}


async def fleet(members: list[FleetMember], session: aiohttp.ClientSession) -> dict[str, Any]:
    """Every member's status, asked in parallel; a host that does not answer says so."""
    hosts = await asyncio.gather(*(fetch_status(m, session) for m in members))
    return {"hosts": list(hosts)}
