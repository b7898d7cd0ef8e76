"""The amdgpu backend against sysfs/hwmon/procfs trees shaped as the kernel makes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hydra_fleet.exporter.backends.amdgpu import (
    AmdgpuBackend,
    current_dpm_hertz,
    dpm_levels,
    pcie_generation,
)
from tests.exporter.kernel_trees import (
    MI50_FILES,
    MI50_HWMON,
    PCI_IDS,
    W7500_FILES,
    W7500_HWMON,
    Card,
    Proc,
    drm_fdinfo,
    make_proc,
    make_sysfs,
    write_kfd_process,
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
            Card(
                1,
                MI50_BUS,
                device="0x66a1",
                files=MI50_FILES,
                hwmon=MI50_HWMON,
                gfx=90006,
                gpu_id=53012,
            ),
            Card(
                2,
                W7500_BUS,
                device="0x7489",
                files=W7500_FILES,
                hwmon=W7500_HWMON,
                connectors=("DP-2",),
                gfx=110002,
                gpu_id=9313,
            ),
        ],
    )
    # ROCm processes as KFD lists them (ollama and llama-server are HIP programs).
    write_kfd_process(sysfs, 1200, {53012: 4 * 1024**3})
    write_kfd_process(sysfs, 1300, {9313: 1024**3})
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
    """MI50 and W7500 are read in PCI order, in base units; the NVIDIA card is skipped."""
    sysfs, proc = trees
    mi50, w7500 = AmdgpuBackend(sysfs, proc, pci_ids=Path("/nonexistent")).collect()
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
    assert w7500.pcie_link_width == 8
    assert w7500.ecc_errors_total == {}
    # No product_name and no pci.ids: the PCI device id, not a guess.
    assert w7500.name == "AMD GPU 0x7489"


def test_metrics_operators_migrate_for(trees: tuple[Path, Path]) -> None:
    """Memory activity, min/max clocks, power-cap range, max link, PCIe replays, free memory."""
    sysfs, proc = trees
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert mi50.memory_utilization_ratio == pytest.approx(0.21)
    assert w7500.memory_utilization_ratio == pytest.approx(0.01)
    assert mi50.memory_free_bytes == 20 * 1024**3
    assert mi50.clock_min_hertz == {"graphics": 925e6, "memory": 350e6}
    assert mi50.clock_max_hertz == {"graphics": 1725e6, "memory": 800e6}
    assert w7500.clock_hertz == {"graphics": 500e6, "memory": 1124e6}
    assert w7500.clock_max_hertz == {"graphics": 2000e6, "memory": 1124e6}
    assert (mi50.power_limit_min_watts, mi50.power_limit_max_watts) == (0.0, 300.0)
    assert mi50.power_limit_default_watts == 225.0
    assert (w7500.power_limit_min_watts, w7500.power_limit_max_watts) == (50.0, 70.0)
    assert (mi50.pcie_link_max_generation, mi50.pcie_link_max_width) == (4, 16)
    assert (w7500.pcie_link_max_generation, w7500.pcie_link_max_width) == (4, 8)
    assert (mi50.pcie_replay_errors_total, w7500.pcie_replay_errors_total) == (0.0, 2.0)
    # NVIDIA-only readings stay absent on AMD.
    assert mi50.performance_state is None
    assert mi50.clock_event_active == {}
    assert mi50.encoder_utilization_ratio is None


def test_model_name_from_pci_ids(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """A card without product_name is named from pci.ids: the board's subsystem entry first."""
    sysfs, proc = trees
    ids = tmp_path / "pci.ids"
    ids.write_text(PCI_IDS)
    mi50, w7500 = AmdgpuBackend(sysfs, proc, pci_ids=ids).collect()
    assert w7500.name == "Radeon Pro W7500"
    assert mi50.name == "Radeon Instinct MI50 32GB"  # sysfs product_name wins
    # An unlisted subsystem falls back to the chip's entry.
    (sysfs / "devices/pci0000:00" / W7500_BUS / "subsystem_device").write_text("0xffff\n")
    _, w7500 = AmdgpuBackend(sysfs, proc, pci_ids=ids).collect()
    assert w7500.name == "Navi 33 [Radeon Pro W7500]"


def test_process_vram_by_unit(trees: tuple[Path, Path]) -> None:
    """Per-process VRAM from KFD and fdinfo, each counted once, attributed to systemd units."""
    sysfs, proc = trees
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert [(p.pid, p.comm, p.unit, p.memory_bytes) for p in mi50.processes] == [
        (1200, "ollama", "ollama.service", 4 * 1024**3),
        (1400, "python3", "comfyui.service", 2 * 1024**3 + 1024 * 1024),
    ]
    assert [(p.pid, p.unit, p.memory_bytes) for p in w7500.processes] == [
        (1300, "hydra-inference-w7500.service", 1024**3)
    ]


def test_process_vram_without_ptrace(trees: tuple[Path, Path]) -> None:
    """Other users' fdinfo unreadable (no CAP_SYS_PTRACE): ROCm processes still show, from KFD."""
    sysfs, proc = trees
    for pid in (1200, 1300, 1400):
        shutil.rmtree(proc / str(pid) / "fdinfo")
    mi50, w7500 = AmdgpuBackend(sysfs, proc).collect()
    assert [(p.pid, p.unit, p.memory_bytes) for p in mi50.processes] == [
        (1200, "ollama.service", 4 * 1024**3)
    ]
    assert [(p.pid, p.memory_bytes) for p in w7500.processes] == [(1300, 1024**3)]


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
    assert dpm_levels("0: 500Mhz *\n1: 2Ghz\n") == ([500e6, 2e9], 500e6)
    assert pcie_generation("32.0 GT/s PCIe") == 5
    assert pcie_generation("2.5 GT/s") == 1
    assert pcie_generation("Unknown") is None
