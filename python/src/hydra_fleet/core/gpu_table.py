"""The GPU table shared by the exporter's page and the agent's page."""

from __future__ import annotations

from typing import Any

from hydra_fleet.core.gpu_metrics import missing_devices
from hydra_fleet.core.html import badge, esc, table, vram_bar


def gpu_rows(parsed: dict[str, Any]) -> str:
    """One row per GPU (state, VRAM bar with each unit's share, temperature, power, load)."""
    rows = []
    for gpu in parsed["gpus"]:
        state = "up" if gpu["up"] else "down"
        name = f"{esc(gpu['vendor'])}:{esc(gpu['index'])} {esc(gpu['name'])}"
        units = [(u["unit"], float(u["memoryBytes"])) for u in gpu.get("units", [])]
        temp = gpu["temperatureCelsius"]
        power, limit = gpu["powerWatts"], gpu["powerLimitWatts"]
        util = gpu["utilizationRatio"]
        rows.append(
            (
                [
                    f"<strong>{name}</strong>",
                    badge(state),
                    vram_bar(gpu["memoryUsedBytes"], gpu["memoryTotalBytes"], units),
                    "-" if temp is None else f"{temp:.0f} °C",
                    "-"
                    if power is None
                    else f"{power:.0f} W" + ("" if limit is None else f" / {limit:.0f} W"),
                    "-" if util is None else f"{100 * util:.0f}%",
                ],
                "" if gpu["up"] else "bad",
            )
        )
    for vendor, count in missing_devices(parsed).items():
        rows.append(
            (
                [
                    f"<strong>{esc(vendor)}: {count} not listed</strong>",
                    badge("lost"),
                    f"expected {parsed['expectedDevices'][vendor]} {esc(vendor)} GPUs "
                    "from the inventory",
                    "",
                    "",
                    "",
                ],
                "bad",
            )
        )
    return table(["GPU", "state", "VRAM", "temp", "power", "load"], rows, "gpus")
