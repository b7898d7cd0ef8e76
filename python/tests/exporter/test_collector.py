"""The collector's families and the fast text renderer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from hydra_fleet.exporter.collector import GpuCollector, render
from hydra_fleet.exporter.model import BackendResult, DeviceSample, ProcessSample, Snapshot


def snapshot() -> Snapshot:
    odd = DeviceSample(
        "amd",
        "1",
        "0b7d",
        name='Radeon "Pro"\\W7500\nrev',
        memory_total_bytes=8.0 * 1024**3,
        temperature_celsius={"junction": 61.5, "edge": 50.0},
        ecc_errors_total={"corrected": 3},
        energy_joules_total=1e12,
        processes=[ProcessSample(7, 'we"ird\\comm', "a.service", 123)],
    )
    lost = DeviceSample("nvidia", "0", "GPU-x", up=False, name="RTX 5090")
    return Snapshot(
        [BackendResult("amdgpu", True, 0.0123, [odd]), BackendResult("nvml", False, 0.0, [lost])],
        {"amd": 1, "nvidia": 2},
    )


def test_render_matches_prometheus_client() -> None:
    """The fast renderer writes exactly what prometheus_client's generate_latest writes."""
    snap = snapshot()
    collector = GpuCollector(lambda: snap)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert render(collector) == generate_latest(registry)


def test_fresh_families_per_scrape() -> None:
    """A device that disappears between scrapes leaves no series behind."""
    snap = snapshot()
    collector = GpuCollector(lambda: snap)
    assert b'uuid="0b7d"' in render(collector)
    snap.results[0].devices.clear()
    text = render(collector)
    assert b'uuid="0b7d"' not in text
    assert b'hydra_gpu_up{index="0",uuid="GPU-x",vendor="nvidia"} 0.0' in text


def test_nothing_before_first_collection() -> None:
    """Before the first collection there is nothing to serve, not zeros."""
    assert render(GpuCollector(lambda: None)) == b""
