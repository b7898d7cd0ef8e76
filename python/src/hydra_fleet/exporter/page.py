"""The exporter's `/`: its GPU table, rendered from the same scrape Prometheus gets."""

from __future__ import annotations

import socket

from aiohttp import web

from hydra_fleet.core.gpu_metrics import missing_devices, parse_gpus
from hydra_fleet.core.gpu_table import gpu_rows
from hydra_fleet.core.html import badge, esc, page


def render(exposition: str, backends: dict[str, bool]) -> str:
    parsed = parse_gpus(exposition)
    gpus = parsed["gpus"]
    up = sum(1 for g in gpus if g["up"])
    missing = sum(missing_devices(parsed).values())
    healthy = up == len(gpus) and not missing and all(backends.values())
    line = f"{up} of {len(gpus) + missing} GPUs up" + (f", {missing} not listed" if missing else "")
    names = " ".join(
        f"{esc(name)} {badge('up' if ok else 'failed')}" for name, ok in backends.items()
    )
    body = (
        f'<p class="summary">{badge("healthy" if healthy else "unhealthy")} {esc(line)}</p>'
        f"<h2>GPUs</h2>{gpu_rows(parsed)}"
        f"<h2>Backends</h2><p>{names or 'none (no GPU found)'}</p>"
        '<p class="muted"><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p>'
    )
    return page(f"hydra-gpu-exporter on {socket.gethostname()}", "GPU exporter", body)


async def index(request: web.Request) -> web.Response:
    from hydra_fleet.exporter.app import EXPORTER  # noqa: PLC0415 - app imports this module

    exporter = request.app[EXPORTER]
    text = (await exporter.scrape()).decode()
    backends = {b.name: b.name not in exporter.failing for b in exporter.backends}
    return web.Response(text=render(text, backends), content_type="text/html")
