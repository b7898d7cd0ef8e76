"""The GPU table read back from the exporter: a card missing from the listing is named."""

from __future__ import annotations

import asyncio

from hydra_fleet.core.gpu_metrics import missing_devices, parse_gpus
from hydra_fleet.exporter import page
from hydra_fleet.exporter.app import Exporter
from hydra_fleet.exporter.backends.synthetic import SyntheticBackend
from hydra_fleet.exporter.config import SyntheticDevice

GIB = 1024**3


def _scrape(expected: int) -> str:
    devices = [
        SyntheticDevice(name="Demo W7500", vendor="amd", memory_bytes=8 * GIB, process_count=2),
        SyntheticDevice(name="Demo MI50", vendor="amd", memory_bytes=32 * GIB, lost=True),
    ]
    exporter = Exporter([SyntheticBackend(devices)], {"synthetic": expected})
    try:
        return asyncio.run(exporter.scrape()).decode()
    finally:
        exporter.close()


def test_parse_reads_what_the_exporter_serves() -> None:
    parsed = parse_gpus(_scrape(2))
    w7500, mi50 = parsed["gpus"]
    assert (w7500["name"], w7500["up"], w7500["memoryTotalBytes"]) == ("Demo W7500", True, 8 * GIB)
    assert w7500["temperatureCelsius"] >= 40  # the hottest of edge, junction and mem
    assert [u["unit"] for u in w7500["units"]] == ["synthetic-0.service"]
    assert w7500["units"][0]["memoryBytes"] == 2 * GIB  # two workers of 1 GiB, one unit
    assert (mi50["name"], mi50["up"], mi50["memoryTotalBytes"]) == ("Demo MI50", False, None)
    assert missing_devices(parsed) == {}


def test_a_gpu_the_exporter_does_not_list_is_shown() -> None:
    html = page.render(_scrape(3), {"synthetic": True})
    assert "synthetic: 1 not listed" in html
    assert "expected 3 synthetic GPUs from the inventory" in html
    assert "1 of 3 GPUs up, 1 not listed" in html
