"""The collector's families and the fast text renderer."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend
from hydra_fleet.exporter.backends.nvml import NvmlBackend
from hydra_fleet.exporter.collector import GpuCollector, render
from hydra_fleet.exporter.model import BackendResult, DeviceSample, ProcessSample, Snapshot
from tests.exporter.conftest import promtool_check, series, value
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.kernel_trees import MI50_FILES, MI50_HWMON, Card, make_proc, make_sysfs


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


def test_new_metrics_in_exposition_pass_promtool(tmp_path: Path) -> None:
    """NVIDIA (fake NVML) and AMD (sysfs tree) in one exposition: one schema, base units,
    `promtool check metrics` clean, NVIDIA-only families absent for AMD devices."""
    nvml = NvmlBackend(tmp_path, nvml=FakeNvml([FakeGpu("GPU-a", "RTX 4090", "0:1:0.0")]))
    nvml.start()
    sysfs = make_sysfs(
        tmp_path / "sys",
        [Card(1, "0000:03:00.0", files=MI50_FILES, hwmon=MI50_HWMON, gfx=90006)],
    )
    amd = AmdgpuBackend(sysfs, make_proc(tmp_path / "proc", []))
    try:
        results = [
            BackendResult("nvml", True, 0.01, nvml.collect()),
            BackendResult("amdgpu", True, 0.01, amd.collect()),
        ]
    finally:
        nvml.close()
    text = render(GpuCollector(lambda: Snapshot(results, {"nvidia": 1, "amd": 1}))).decode()
    promtool_check(text)
    nv = {"vendor": "nvidia", "index": "0", "uuid": "GPU-a"}
    mi50 = {"vendor": "amd", "index": "0", "uuid": "0b7d2c8172fe7213"}
    assert value(text, "hydra_gpu_memory_utilization_ratio", **nv) == 0.10
    assert value(text, "hydra_gpu_memory_utilization_ratio", **mi50) == 0.21
    assert value(text, "hydra_gpu_decoder_utilization_ratio", **nv) == 0.07
    assert value(text, "hydra_gpu_performance_state", **nv) == 2
    assert value(text, "hydra_gpu_power_limit_default_watts", **mi50) == 225
    assert value(text, "hydra_gpu_clock_max_hertz", clock="memory", **mi50) == 800e6
    assert value(text, "hydra_gpu_clock_min_hertz", clock="graphics", **mi50) == 925e6
    assert value(text, "hydra_gpu_clock_event_active", reason="sw_power_cap", **nv) == 1
    assert value(text, "hydra_gpu_clock_throttle_seconds_total", reason="power", **nv) == 12.5
    assert value(text, "hydra_gpu_pcie_replay_errors_total", **nv) == 3
    assert value(text, "hydra_gpu_pcie_replay_errors_total", **mi50) == 0
    assert value(text, "hydra_gpu_pcie_link_max_generation", **mi50) == 4
    assert value(text, "hydra_gpu_memory_free_bytes", **mi50) == 20 * 1024**3
    # NVIDIA-only families: no AMD series at all (not zeros).
    for name in ("hydra_gpu_performance_state", "hydra_gpu_clock_event_active"):
        assert all(s["vendor"] == "nvidia" for s in series(text, name)), name
    # The GeForce fake lacks PCIe byte counters and row remapping: omitted.
    assert "hydra_gpu_pcie_transmit_bytes_total{" not in text
    assert "hydra_gpu_remapped_rows{" not in text
