"""The GPU table, read back from an exporter's `/metrics` text.

The status pages, `hydra-health status` and `hydra-launch ps` show the same figures the
exporter serves to Prometheus, so they are parsed from that text rather than collected twice.
Every key is camelCase; a figure the hardware does not report is absent (None), never 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "hydra_gpu_"
SCALARS = {
    "memory_used_bytes": "memoryUsedBytes",
    "memory_total_bytes": "memoryTotalBytes",
    "power_watts": "powerWatts",
    "power_limit_watts": "powerLimitWatts",
    "utilization_ratio": "utilizationRatio",
}


def parse_gpus(text: str) -> dict[str, Any]:
    """`{"gpus": [...], "expectedDevices": {vendor: n}}` from an exposition text.

    Each GPU: vendor, index, uuid, name, up, memoryUsedBytes, memoryTotalBytes, powerWatts,
    powerLimitWatts, utilizationRatio, temperatureCelsius (the hottest sensor) and `units`
    (VRAM held per systemd unit, largest first).
    """
    gpus: dict[tuple[str, str, str], dict[str, Any]] = {}
    units: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    expected: dict[str, int] = {}

    def gpu(labels: dict[str, str]) -> dict[str, Any]:
        key = (labels.get("vendor", ""), labels.get("index", ""), labels.get("uuid", ""))
        if key not in gpus:
            gpus[key] = {
                "vendor": key[0],
                "index": key[1],
                "uuid": key[2],
                "name": "",
                "up": False,
                "temperatureCelsius": None,
                **dict.fromkeys(SCALARS.values()),
            }
        return gpus[key]

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix(PREFIX)
            labels = sample.labels
            if name == "expected_devices":
                expected[labels.get("vendor", "")] = int(sample.value)
            elif name.startswith("exporter_") or "uuid" not in labels:
                continue
            elif name == "up":
                gpu(labels)["up"] = sample.value == 1
            elif name == "info":
                gpu(labels)["name"] = labels.get("name", "")
            elif name in SCALARS:
                gpu(labels)[SCALARS[name]] = sample.value
            elif name == "temperature_celsius":
                entry = gpu(labels)
                hottest = entry["temperatureCelsius"]
                entry["temperatureCelsius"] = max(sample.value, hottest or sample.value)
            elif name == "process_memory_bytes":
                gpu(labels)
                key = (labels["vendor"], labels["index"], labels["uuid"])
                units[key][labels.get("unit") or labels.get("comm") or "?"] += sample.value
    for key, entry in gpus.items():
        held = sorted(units.get(key, {}).items(), key=lambda item: -item[1])
        entry["units"] = [{"unit": unit, "memoryBytes": int(n)} for unit, n in held]
    ordered = sorted(gpus.values(), key=lambda g: (g["vendor"], _index_key(g["index"])))
    return {"gpus": ordered, "expectedDevices": expected}


def _index_key(index: str) -> tuple[int, str]:
    return (int(index), "") if index.isdigit() else (1 << 30, index)


def missing_devices(parsed: dict[str, Any]) -> dict[str, int]:
    """Per vendor, how many expected GPUs the exporter does not list at all."""
    seen: dict[str, int] = defaultdict(int)
    for entry in parsed["gpus"]:
        seen[entry["vendor"]] += 1
    return {
        vendor: want - seen[vendor]
        for vendor, want in parsed["expectedDevices"].items()
        if want > seen[vendor]
    }
