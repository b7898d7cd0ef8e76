"""The amdgpu backend against sysfs/hwmon/procfs trees shaped as the kernel makes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend, current_dpm_hertz, pcie_generation
from tests.exporter.kernel_trees import (
    MI50_FILES,
    MI50_HWMON,
    W7500_FILES,
    W7500_HWMON,
    Card,
    Proc,
    drm_fdinfo,
    make_proc,
    make_sysfs,
)

MI50_BUS = "0000:03:00.0"
W7500_BUS = "0000:0c:00.0"


@pytest.fixture(name="trees")
def fixture_trees(tmp_path: Path) -> tuple[Path, Path]:
    sysfs = make_sysfs(
        tmp_path / "sys",
        [
            # An NVIDIA card probed first must not be taken for an AMD one.
            Card(0, "0000:01:00.0", vendor="0x10de", device="0x2684", connectors=("DP-1",)),
            Card(1, MI50_BUS, device="0x66a1", files=MI50_FILES, hwmon=MI50_HWMON, gfx=90006),
            Card(
                2,
                W7500_BUS,
                device="0x7489",
                files=W7500_FILES,
                hwmon=W7500_HWMON,
                connectors=("DP-2",),
                gfx=110002,
            ),
        ],
    )
    proc = make_proc(
        tmp_path / "proc",
        [
            Proc(
                1200,
                "ollama",
                "0::/system.slice/ollama.service",
                {
                    7: drm_fdinfo(MI50_BUS, 11, 4 * 1024 * 1024),
                    8: drm_fdinfo(MI50_BUS, 11, 4 * 1024 * 1024),
                },
            ),
            Proc(
                1300,
                "llama-server",
                "0::/system.slice/hydra-inference-w7500.service",
                {5: drm_fdinfo(W7500_BUS, 12, 1024 * 1024)},
            ),
            Proc(
                1400,
                "python3",
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/comfyui.service",
                {5: drm_fdinfo(MI50_BUS, 13, 2 * 1024 * 1024), 6: drm_fdinfo(MI50_BUS, 14, 1024)},
            ),
        ],
    )
    return sysfs, proc


def test_reads_both_cards(trees: tuple[Path, Path]) -> None:
    """MI50 and W7500 are read in card order, in base units; the NVIDIA card is skipped."""
    sysfs, proc = trees
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert (mi50.vendor, mi50.index, mi50.uuid, mi50.pci_bus_id) == (
        "amd",
        "0",
        "0b7d2c8172fe7213",
        MI50_BUS,
    )
    assert mi50.name == "Radeon Instinct MI50 32GB"
    assert mi50.driver_version == "6.12.40"
    assert (mi50.arch, w7500.arch) == ("gfx906", "gfx1102")
    assert mi50.up
    assert mi50.utilization_ratio == pytest.approx(0.37)
    assert mi50.memory_total_bytes == 32 * 1024**3
    assert mi50.memory_used_bytes == 12 * 1024**3
    assert mi50.gtt_used_bytes == 20 * 1024**2
    assert mi50.power_watts == pytest.approx(187.0)
    assert mi50.power_limit_watts == pytest.approx(225.0)
    assert mi50.temperature_celsius == {"edge": 52.0, "junction": 61.0, "mem": 58.0}
    assert mi50.clock_hertz == {"graphics": 1725e6, "memory": 800e6}
    assert (mi50.pcie_link_generation, mi50.pcie_link_width) == (4, 16)
    assert mi50.ecc_errors_total == {"corrected": 6, "uncorrected": 1}
    assert mi50.fan_speed_ratio is None  # passively cooled: omitted, not 0

    # No unique_id on RDNA3: the bus id identifies it. power1_input instead of _average.
    assert (w7500.index, w7500.uuid) == ("1", W7500_BUS)
    assert w7500.power_watts == pytest.approx(25.0)
    assert w7500.fan_speed_ratio == pytest.approx(0.4)
    assert w7500.clock_hertz == {"graphics": 500e6}
    assert w7500.pcie_link_width == 8
    assert w7500.ecc_errors_total == {}


def test_process_vram_by_unit(trees: tuple[Path, Path]) -> None:
    """Per-process VRAM from fdinfo, deduplicated by client id, attributed to systemd units."""
    sysfs, proc = trees
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert [(p.pid, p.comm, p.unit, p.memory_bytes) for p in mi50.processes] == [
        (1200, "ollama", "ollama.service", 4 * 1024**3),
        (1400, "python3", "comfyui.service", 2 * 1024**3 + 1024 * 1024),
    ]
    assert [(p.pid, p.unit, p.memory_bytes) for p in w7500.processes] == [
        (1300, "hydra-inference-w7500.service", 1024**3)
    ]


def test_suspended_card_is_not_woken(trees: tuple[Path, Path]) -> None:
    """A runtime-suspended card reports its size only; readings that would be junk are omitted."""
    sysfs, proc = trees
    (sysfs / "devices/pci0000:00" / W7500_BUS / "power/runtime_status").write_text("suspended\n")
    _, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert w7500.up
    assert w7500.memory_total_bytes == 8 * 1024**3
    assert w7500.utilization_ratio is None
    assert w7500.power_watts is None


def test_card_without_memory_file_is_down(trees: tuple[Path, Path]) -> None:
    """A card whose files stop answering (reset, fell off the bus) is up=0 with its identity."""
    sysfs, proc = trees
    (sysfs / "devices/pci0000:00" / MI50_BUS / "mem_info_vram_total").unlink()
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert not mi50.up
    assert mi50.uuid == "0b7d2c8172fe7213"
    assert w7500.up


def test_no_amd_cards(tmp_path: Path) -> None:
    """A host with only an NVIDIA card has no amdgpu devices."""
    sysfs = make_sysfs(tmp_path / "sys", [Card(0, "0000:01:00.0", vendor="0x10de")])
    assert AmdgpuBackend(sysfs, make_proc(tmp_path / "proc", [])).collect() == []


def test_parsers() -> None:
    """pp_dpm_* active level and PCIe speed strings."""
    assert current_dpm_hertz("0: 96Mhz\n1: 1000Mhz *\n") == 1e9
    assert current_dpm_hertz("0: 96Mhz\n1: 1000Mhz\n") is None
    assert pcie_generation("32.0 GT/s PCIe") == 5
    assert pcie_generation("2.5 GT/s") == 1
    assert pcie_generation("Unknown") is None
