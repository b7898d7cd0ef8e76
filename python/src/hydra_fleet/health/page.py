"""The agent's pages: `/` (this host) and `/fleet` (every host), HTML or JSON by `Accept`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from hydra_fleet.core.fetch import agent_url
from hydra_fleet.core.gpu_table import gpu_rows
from hydra_fleet.core.html import ago, badge, clock, esc, gib, page, since, table, vram_bar
from hydra_fleet.core.report import FAILING, alerts_waiting, failing_checks
from hydra_fleet.health.agent import Agent
from hydra_fleet.health.config import FleetMember
from hydra_fleet.health.overview import fleet, overview


def _restarts(remediation: dict[str, Any] | None, now: float) -> str:
    if remediation is None:
        return '<span class="muted">no remediation</span>'
    left, most = remediation["restartsLeft"], remediation["maxPerHour"]
    text = f"{left} of {most} left"
    if remediation.get("escalatedAt"):
        return (
            f"{badge('exhausted')} {esc(text)}; escalated {since(remediation['escalatedAt'], now)}"
        )
    nxt = remediation.get("nextAllowedAt")
    if nxt:
        text += f"; next in {ago(nxt - now)}"
    return esc(text)


def _checks(status: dict[str, Any], now: float) -> str:
    rows = []
    order = sorted(
        status["checks"].items(), key=lambda item: (item[1]["state"] not in FAILING, item[0])
    )
    for name, c in order:
        grace = ' <span class="muted">(start-up grace)</span>' if c.get("inGrace") else ""
        rows.append(
            (
                [
                    f"<strong>{esc(name)}</strong> <span class='muted'>{esc(c['type'])}</span>",
                    badge(c["state"]) + grace,
                    since(c.get("since"), now),
                    f'<span class="detail">{esc(c["detail"])}</span>',
                    _restarts(c.get("remediation"), now),
                ],
                "bad" if c["state"] in FAILING else "",
            )
        )
    return table(["check", "state", "since", "last detail", "restarts"], rows, "checks")


def _outbox(status: dict[str, Any]) -> str:
    rows = [
        (
            [
                esc(sink),
                f'<span class="num">{s["waiting"]}</span>',
                esc(ago(s["oldestAgeSeconds"])) if s["waiting"] else "-",
            ],
            "bad" if s["waiting"] else "",
        )
        for sink, s in status.get("outbox", {}).items()
    ]
    return table(["sink", "alerts waiting", "oldest"], rows, "outbox")


def _waiting(status: dict[str, Any], now: float) -> str:
    alerts = status.get("waitingAlerts", [])
    if not alerts:
        return ""
    rows = [
        (
            [
                f"<strong>{esc(a['alertname'])}</strong> {esc(a['check'])}",
                badge("firing" if a["status"] == "firing" else "resolved"),
                esc(a["sink"]),
                since(a["createdAt"], now),
                f'<span class="num">{a["attempts"]}</span>',
                f'<span class="detail">{esc(a["lastError"] or "not tried yet")}</span>',
            ],
            "",
        )
        for a in alerts
    ]
    headers = ["alert", "status", "sink", "queued", "tries", "last error"]
    return "<h3>Not yet delivered</h3>" + table(headers, rows, "waiting")


def _gpus_of(inst: dict[str, Any]) -> str:
    return ", ".join(
        f"{g['vendor']}:{g['index']} {g.get('model') or ''}".strip() for g in inst["gpus"]
    )


def _instances(status: dict[str, Any], now: float) -> str:
    rows = []
    for inst in status.get("instances", []):
        vram = ", ".join(f"{v['gpu']} {gib(v['memoryBytes'])}" for v in inst["vram"]) or "-"
        bad = inst["state"] in FAILING
        rows.append(
            (
                [
                    f"<strong>{esc(inst['name'])}</strong>",
                    esc(inst["engine"]),
                    esc(inst["model"]),
                    esc(inst["contextLength"] or "-"),
                    esc(_gpus_of(inst) or "-"),
                    esc(vram),
                    badge(inst["state"]),
                    since(inst["readySince"], now),
                ],
                "bad" if bad else "",
            )
        )
    note = status.get("instancesError")
    extra = f'<p class="s-bad">{esc(note)}</p>' if note else ""
    headers = ["instance", "engine", "model", "context", "GPUs", "VRAM", "state", "ready since"]
    return table(headers, rows, "instances") + extra


def _gpus(status: dict[str, Any]) -> str:
    exporter = status.get("exporter") or {}
    if not exporter.get("ok"):
        return (
            f"<p>{badge('no answer')} exporter {esc(exporter.get('url') or '')}: "
            f"{esc(exporter.get('error'))}</p>"
        )
    parsed = {"gpus": status.get("gpus", []), "expectedDevices": status.get("expectedDevices", {})}
    return gpu_rows(parsed)


def summary_line(status: dict[str, Any]) -> str:
    checks = status["checks"]
    bad = failing_checks(status)
    waiting = alerts_waiting(status)
    head = badge("healthy" if status["healthy"] else "unhealthy")
    if bad:
        text = f"{len(bad)} of {len(checks)} checks failing: " + ", ".join(sorted(bad))
    else:
        up = sum(1 for c in checks.values() if c["state"] == "up")
        text = f"{up} of {len(checks)} checks up"
    text += f" · {waiting} alert{'s' if waiting != 1 else ''} waiting"
    return f'<p class="summary">{head} {esc(text)}</p>'


def render_status(status: dict[str, Any]) -> str:
    now = status.get("generatedAt") or time.time()
    body = (
        summary_line(status)
        + f"<h2>Checks</h2>{_checks(status, now)}"
        + f"<h2>Engines</h2>{_instances(status, now)}"
        + f"<h2>GPUs</h2>{_gpus(status)}"
        + f"<h2>Alerts waiting</h2>{_outbox(status)}{_waiting(status, now)}"
        + '<p class="muted"><a href="/status">/status</a> (JSON) · <a href="/metrics">/metrics</a>'
        + (' · <a href="/fleet">fleet</a>' if status.get("fleet") else "")
        + "</p>"
    )
    return page(f"{status['host']}", "hydra health agent", body)


def _host_row(host: dict[str, Any]) -> tuple[list[str], str]:
    name = f'<strong><a href="{esc(host["url"])}">{esc(host["name"])}</a></strong>'
    status = host.get("status")
    if not host["answered"] or status is None:
        return (
            [
                name,
                badge("no answer"),
                f'<span class="detail">{esc(host["error"])}</span>',
                "",
                "",
                "",
            ],
            "bad",
        )
    gpus = "".join(
        f"<div>{badge('up' if g['up'] else 'down')} {esc(g['vendor'])}:{esc(g['index'])} "
        f"{esc(g['name'])}"
        + (
            vram_bar(
                g["memoryUsedBytes"],
                g["memoryTotalBytes"],
                [(u["unit"], float(u["memoryBytes"])) for u in g.get("units", [])],
                legend=False,
            )
            if g.get("memoryTotalBytes")
            else ""
        )
        + "</div>"
        for g in status.get("gpus", [])
    )
    exporter = status.get("exporter") or {}
    if not exporter.get("ok"):
        gpus += f"<div>{badge('no answer')} exporter: {esc(exporter.get('error'))}</div>"
    engines = "".join(
        f"<div>{badge(i['state'])} {esc(i['name'])}: {esc(i['model'])}"
        f" ({esc(i['engine'])}, {esc(i['contextLength'] or '-')} ctx)</div>"
        for i in status.get("instances", [])
    )
    failing = "".join(
        f"<div>{badge(c['state'])} {esc(n)}: <span class='detail'>{esc(c['detail'])}</span></div>"
        for n, c in sorted(failing_checks(status).items())
    )
    waiting = ", ".join(
        f"{esc(sink)} {s['waiting']}"
        for sink, s in status.get("outbox", {}).items()
        if s["waiting"]
    )
    state = "healthy" if status.get("healthy") else "unhealthy"
    return (
        [name, badge(state), gpus or "-", engines or "-", failing or "none", waiting or "0"],
        "" if status.get("healthy") else "bad",
    )


def render_fleet(data: dict[str, Any]) -> str:
    hosts = data["hosts"]
    silent = [h["name"] for h in hosts if not h["answered"]]
    unhealthy = [
        h["name"] for h in hosts if h["answered"] and not (h.get("status") or {}).get("healthy")
    ]
    parts = [f"{len(hosts)} hosts"]
    if unhealthy:
        parts.append("unhealthy: " + ", ".join(unhealthy))
    if silent:
        parts.append("not answering: " + ", ".join(silent))
    head = badge("healthy" if not (silent or unhealthy) else "unhealthy")
    rows = [_host_row(h) for h in hosts]
    body = f'<p class="summary">{head} {esc(" · ".join(parts))}</p>' + table(
        ["host", "state", "GPUs", "engines", "failing checks", "alerts waiting"], rows, "fleet"
    )
    return page("hydra fleet", f"{len(hosts)} hosts · {esc(clock(time.time()))}", body)


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def add_routes(app: web.Application, agent: Agent) -> None:
    """`/status` (JSON), `/` (HTML, or JSON for `Accept: application/json`) and `/fleet`."""

    def session_call(
        build: Callable[[aiohttp.ClientSession], Awaitable[dict[str, Any]]],
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def call() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session:
                return await build(session)

        return call

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await session_call(lambda s: overview(agent, s))())

    async def index(request: web.Request) -> web.Response:
        data = await session_call(lambda s: overview(agent, s))()
        if wants_json(request):
            return web.json_response(data)
        return web.Response(text=render_status(data), content_type="text/html")

    async def fleet_page(request: web.Request) -> web.Response:
        members = agent.config.fleet or [
            FleetMember(agent.host, agent_url(agent.config.listen_address, agent.config.port))
        ]
        data = await session_call(lambda s: fleet(members, s))()
        if wants_json(request):
            return web.json_response(data)
        return web.Response(text=render_fleet(data), content_type="text/html")

    app.router.add_get("/status", status)
    app.router.add_get("/", index)
    app.router.add_get("/fleet", fleet_page)
