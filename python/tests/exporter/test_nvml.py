"""The NVML backend against a stand-in module raising pynvml's real exception classes."""

from __future__ import annotations

import time
from pathlib import Path

import pynvml
import pytest

from hydra_fleet.exporter.backends.nvml import NvmlBackend
from tests.exporter.fake_nvml import FakeGpu, FakeNvml, error
from tests.exporter.kernel_trees import Proc, make_proc

RTX5090 = "GPU-5f0e2b7c-0000-0000-0000-000000005090"
RTX4090 = "GPU-5f0e2b7c-0000-0000-0000-000000004090"


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            RTX5090,
            "NVIDIA GeForce RTX 5090",
            "00000000:01:00.0",
            capability=(12, 0),
            total=32 * 1024**3,
        ),
        FakeGpu(RTX4090, "NVIDIA GeForce RTX 4090", "00000000:02:00.0", fan=None),
    ]


def test_real_error_classes() -> None:
    """The stand-in raises what pynvml raises: the generated NVMLError_* subclasses."""
    assert type(error(pynvml.NVML_ERROR_GPU_IS_LOST)) is pynvml.NVMLError_GpuIsLost
    assert type(error(pynvml.NVML_ERROR_NOT_SUPPORTED)) is pynvml.NVMLError_NotSupported


def test_reads_devices_in_base_units(tmp_path: Path) -> None:
    """Memory in bytes, power in watts, clocks in hertz, energy in joules; unsupported omitted."""
    nvml = FakeNvml(two_gpus())
    backend = NvmlBackend(tmp_path, nvml=nvml, watch_xid=False)
    backend.start()
    first, second = backend.collect()
    assert (first.vendor, first.index, first.uuid) == ("nvidia", "0", RTX5090)
    assert (first.name, first.arch, first.driver_version) == (
        "NVIDIA GeForce RTX 5090",
        "sm_120",
        "580.95.05",
    )
    assert first.pci_bus_id == "00000000:01:00.0"
    assert first.up
    assert first.memory_total_bytes == 32 * 1024**3
    assert first.memory_used_bytes == 3 * 1024**3
    assert first.utilization_ratio == pytest.approx(0.42)
    assert first.power_watts == pytest.approx(123.456)
    assert first.power_limit_watts == pytest.approx(450.0)
    assert first.energy_joules_total == pytest.approx(7654.321)
    assert first.temperature_celsius == {"gpu": 61.0}  # memory temp NOT_SUPPORTED: omitted
    assert first.clock_hertz["graphics"] == 2520e6
    assert first.clock_hertz["memory"] == 10501e6
    assert (first.pcie_link_generation, first.pcie_link_width) == (4, 16)
    assert first.ecc_errors_total == {}  # consumer card: no ECC, not zero
    assert first.fan_speed_ratio == pytest.approx(0.30)
    assert second.fan_speed_ratio is None  # NOT_SUPPORTED: omitted
    assert second.arch == "sm_89"


def test_metrics_operators_migrate_for(tmp_path: Path) -> None:
    """What dcgm-exporter and nvidia_gpu_exporter users miss, in base units; unsupported omitted."""
    gpus = two_gpus()
    gpus[0].fields = {
        pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: 3,
        pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: 81_604_378_624,
        pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: 1_099_511_627_776,
        pynvml.NVML_FI_DEV_REMAPPED_COR: 2,
        pynvml.NVML_FI_DEV_REMAPPED_UNC: 0,
        pynvml.NVML_FI_DEV_REMAPPED_PENDING: 0,
        pynvml.NVML_FI_DEV_REMAPPED_FAILURE: 0,
    }
    gpus[1].encoder = None
    gpus[1].limits_mw = None
    gpus[1].violations_ns = {}
    gpus[1].clock_event_mask = (
        pynvml.nvmlClocksEventReasonGpuIdle | pynvml.nvmlClocksEventReasonHwThermalSlowdown
    )
    backend = NvmlBackend(tmp_path, nvml=FakeNvml(gpus), watch_xid=False)
    backend.start()
    first, second = backend.collect()
    assert first.memory_free_bytes == 29 * 1024**3
    assert first.memory_utilization_ratio == pytest.approx(0.10)
    assert first.encoder_utilization_ratio == 0.0  # idle encoder: 0, it is supported
    assert first.decoder_utilization_ratio == pytest.approx(0.07)
    assert first.performance_state == 2
    assert (first.power_limit_min_watts, first.power_limit_max_watts) == (150.0, 600.0)
    assert first.power_limit_default_watts == 450.0
    assert first.clock_max_hertz == {
        "graphics": 3120e6,
        "sm": 3120e6,
        "memory": 10501e6,
        "video": 2415e6,
    }
    assert (first.pcie_link_max_generation, first.pcie_link_max_width) == (4, 16)
    assert first.clock_event_active["sw_power_cap"] == 1.0
    assert first.clock_event_active["hw_thermal_slowdown"] == 0.0
    assert set(first.clock_event_active) >= {"gpu_idle", "hw_slowdown", "sync_boost"}
    assert first.clock_throttle_seconds_total == {"power": 12.5, "thermal": 0.0}
    assert first.pcie_replay_errors_total == 3.0
    assert first.pcie_transmit_bytes_total == 81_604_378_624
    assert first.pcie_receive_bytes_total == 1_099_511_627_776
    assert first.remapped_rows == {"correctable": 2.0, "uncorrectable": 0.0}
    assert (first.remapped_rows_pending, first.remapped_rows_failed) == (0.0, 0.0)
    assert first.retired_pages == {}  # Ampere+ remaps rows instead of retiring pages
    assert first.retired_pages_pending is None
    # The second card lacks some of these: omitted, never 0.
    assert second.encoder_utilization_ratio is None
    assert second.power_limit_min_watts is None
    assert second.power_limit_default_watts == 450.0
    assert second.clock_throttle_seconds_total == {}
    assert second.pcie_transmit_bytes_total is None
    assert second.remapped_rows == {}
    active = {k for k, v in second.clock_event_active.items() if v}
    assert active == {"gpu_idle", "hw_thermal_slowdown"}


def test_unknown_pstate_is_omitted(tmp_path: Path) -> None:
    gpus = two_gpus()
    gpus[0].pstate = 32  # NVML_PSTATE_UNKNOWN
    backend = NvmlBackend(tmp_path, nvml=FakeNvml(gpus), watch_xid=False)
    backend.start()
    first, second = backend.collect()
    assert first.performance_state is None
    assert second.performance_state == 2


def test_ecc_and_temperature_fallback(tmp_path: Path) -> None:
    """ECC counters from the field-values batch; GetTemperature when TemperatureV is missing."""
    gpu = FakeGpu(RTX4090, "NVIDIA RTX 6000 Ada", "00000000:02:00.0", ecc=(5, 1))
    backend = NvmlBackend(tmp_path, nvml=FakeNvml([gpu], temperature_v=False), watch_xid=False)
    backend.start()
    (sample,) = backend.collect()
    assert sample.ecc_errors_total == {"corrected": 5.0, "uncorrected": 1.0}
    assert sample.temperature_celsius == {"gpu": 61.0}


def test_gpu_lost_then_back(tmp_path: Path) -> None:
    """GPU_IS_LOST marks that one device down, the other stays up; NVML is re-initialised later."""
    gpus = two_gpus()
    nvml = FakeNvml(gpus)
    backend = NvmlBackend(tmp_path, nvml=nvml, watch_xid=False)
    backend.start()
    gpus[1].lost = True
    first, second = backend.collect()
    assert first.up
    assert not second.up
    assert (second.uuid, second.index) == (RTX4090, "1")
    assert second.memory_used_bytes is None

    # Still gone: re-init fails, both are reported from what was known, nothing raises.
    samples = backend.collect()
    assert nvml.init_calls == 2
    assert [s.up for s in samples] == [False, False]

    gpus[1].lost = False
    samples = backend.collect()
    assert nvml.init_calls == 3
    assert [s.up for s in samples] == [True, True]
    assert samples[1].memory_used_bytes == 3 * 1024**3


def test_driver_not_loaded(tmp_path: Path) -> None:
    """Without a driver, start raises the real class and collect keeps raising (no devices)."""
    nvml = FakeNvml(two_gpus(), driver_loaded=False)
    backend = NvmlBackend(tmp_path, nvml=nvml, watch_xid=False)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        backend.start()
    with pytest.raises(RuntimeError, match="NVML is not available"):
        backend.collect()
    nvml.driver_loaded = True
    assert [s.up for s in backend.collect()] == [True, True]


def test_xid_events_counted(tmp_path: Path) -> None:
    """XID events from the background thread are counted per device."""
    nvml = FakeNvml(two_gpus())
    backend = NvmlBackend(tmp_path, nvml=nvml)
    backend.start()
    try:
        assert [s.xid_errors_total for s in backend.collect()] == [0.0, 0.0]
        nvml.events.put((1, 79))
        nvml.events.put((1, 48))
        deadline = time.monotonic() + 10
        while backend.collect()[1].xid_errors_total != 2.0:
            assert time.monotonic() < deadline, "xid events were not counted"
            time.sleep(0.02)
        assert backend.collect()[0].xid_errors_total == 0.0
        # The last XID code is what operators migrating from DCGM_FI_DEV_XID_ERRORS look at.
        assert backend.collect()[1].xid_last_code == 48.0
        assert backend.collect()[0].xid_last_code is None  # none seen: omitted, not 0
    finally:
        backend.close()
    assert nvml.shutdown_calls == 1


def test_processes_with_units(tmp_path: Path) -> None:
    """Compute processes carry comm and the systemd unit from /proc; unknown memory is skipped."""
    proc = make_proc(
        tmp_path, [Proc(4242, "tabbyAPI", "0::/system.slice/hydra-inference-tabby.service")]
    )
    gpus = two_gpus()
    gpus[0].processes = [(4242, 20 * 1024**3), (5151, None)]
    backend = NvmlBackend(proc, nvml=FakeNvml(gpus), watch_xid=False)
    backend.start()
    first, _ = backend.collect()
    assert [(p.pid, p.comm, p.unit, p.memory_bytes) for p in first.processes] == [
        (4242, "tabbyAPI", "hydra-inference-tabby.service", 20 * 1024**3)
    ]
