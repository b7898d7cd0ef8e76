"""The pyrsmi backend against a stand-in for `pyrsmi.rocml`, and its merge with sysfs readings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend
from hydra_fleet.exporter.backends.pyrsmi import (
    PyrsmiBackend,
    PyrsmiUnavailableError,
    bus_id,
    fill_gaps,
)
from tests.exporter.kernel_trees import MI50_FILES, Card, make_proc, make_sysfs

MI50_BDF = (0 << 32) | (0x03 << 8) | (0 << 3) | 0


class FakeRocml:
    """pyrsmi's conventions: device indices, -1 for a reading it cannot make."""

    def __init__(self, *, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.shutdowns = 0

    def smi_initialize(self) -> None:
        if self.fail_init:
            raise RuntimeError("AMD SMI library (libamd_smi.so) not found")

    def smi_shutdown(self) -> None:
        self.shutdowns += 1

    def smi_get_device_count(self) -> int:
        return 1

    def smi_get_kernel_version(self) -> str:
        return "6.12.40"

    def smi_get_device_pci_id(self, dev: int) -> int:
        return MI50_BDF

    def smi_get_device_uuid(self, dev: int, fmt: str = "roc") -> str:
        return "0b7d2c8172fe7213"

    def smi_get_device_name(self, dev: int) -> str:
        return "AMD Instinct MI50"

    def smi_get_device_utilization(self, dev: int) -> int:
        return 55

    def smi_get_device_memory_used(self, dev: int) -> int:
        return 7 * 1024**3

    def smi_get_device_memory_total(self, dev: int) -> int:
        return 32 * 1024**3

    def smi_get_device_average_power(self, dev: int) -> float:
        return 190.0

    def smi_get_device_fan_speed(self, dev: int) -> int:
        return -1  # passively cooled

    def smi_get_device_fan_speed_max(self, dev: int) -> int:
        return -1


def test_bus_id() -> None:
    """pyrsmi's 64-bit BDF becomes the sysfs bus id."""
    assert bus_id((1 << 32) | (0x0C << 8) | (2 << 3) | 1) == "0001:0c:02.1"


def test_reads_and_omits_minus_one() -> None:
    """Readings in base units; -1 (unsupported) is omitted, not reported."""
    backend = PyrsmiBackend(FakeRocml())
    (sample,) = backend.collect()
    assert (sample.vendor, sample.index, sample.pci_bus_id) == ("amd", "0", "0000:03:00.0")
    assert sample.utilization_ratio == pytest.approx(0.55)
    assert sample.power_watts == 190.0
    assert sample.fan_speed_ratio is None
    backend.close()


def test_library_missing_raises_clearly() -> None:
    """No ROCm library: a clear error for collector_success 0, never a crash at import."""
    backend = PyrsmiBackend(FakeRocml(fail_init=True))
    with pytest.raises(PyrsmiUnavailableError, match="libamd_smi"):
        backend.collect()


def test_fills_only_what_sysfs_lacks(tmp_path: Path) -> None:
    """Merged by PCI bus id: sysfs readings win, pyrsmi fills the gaps, no duplicate device."""
    files: dict[str, Any] = {k: v for k, v in MI50_FILES.items() if k != "gpu_busy_percent"}
    sysfs = make_sysfs(tmp_path / "sys", [Card(1, "0000:03:00.0", files=files)])
    (amd,) = AmdgpuBackend(sysfs, make_proc(tmp_path / "proc", [])).collect()
    # No gpu_busy_percent and no hwmon in this tree.
    assert (amd.utilization_ratio, amd.power_watts) == (None, None)
    alone = fill_gaps([amd], PyrsmiBackend(FakeRocml()).collect())
    assert alone == []
    assert amd.utilization_ratio == pytest.approx(0.55)
    assert amd.power_watts == 190.0
    assert amd.memory_used_bytes == 12 * 1024**3  # sysfs value kept
