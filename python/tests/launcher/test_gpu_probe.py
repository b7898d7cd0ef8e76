"""The GPU boundary: amdgpu sysfs + fdinfo on a recorded tree, driver rules, real NVML (-m gpu)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydra_fleet.launcher.gpu_probe import (
    AmdSysfsProbe,
    DriverInfo,
    GpuUnavailable,
    NvmlProbe,
    driver_problem,
    required_cuda,
)

GIB = 1024**3


def amd_tree(root: Path) -> tuple[Path, Path]:
    """Two amdgpu cards (an MI50 and a W7500) and one Intel card, as sysfs shows them."""
    sysfs, proc = root / "sys", root / "proc"
    cards = [
        ("card0", "0000:03:00.0", "0x1002", 32 * GIB, 2 * GIB),
        ("card1", "0000:00:02.0", "0x8086", None, None),
        ("card2", "0000:0a:00.0", "0x1002", 8 * GIB, 1 * GIB),
    ]
    for card, pci, vendor, total, used in cards:
        device = sysfs / "devices" / pci
        device.mkdir(parents=True)
        (device / "vendor").write_text(vendor + "\n")
        if total is not None:
            (device / "mem_info_vram_total").write_text(f"{total}\n")
            (device / "mem_info_vram_used").write_text(f"{used}\n")
        (sysfs / "class/drm").mkdir(parents=True, exist_ok=True)
        (sysfs / "class/drm" / card).mkdir()
        os.symlink(device, sysfs / "class/drm" / card / "device")
    fdinfo = proc / "4242" / "fdinfo"
    fdinfo.mkdir(parents=True)
    (fdinfo / "7").write_text(
        "drm-driver:\tamdgpu\ndrm-pdev:\t0000:0a:00.0\ndrm-memory-vram:\t3145728 KiB\n"
    )
    (fdinfo / "8").write_text("pos:\t0\nflags:\t02\n")
    return sysfs, proc


def test_amd_devices_in_pci_order(tmp_path: Path) -> None:
    """Only amdgpu cards, numbered in PCI order, with total and free memory."""
    sysfs, proc = amd_tree(tmp_path)
    devices = AmdSysfsProbe(sysfs, proc).devices()
    assert [(d.index, d.name, d.total, d.free) for d in devices] == [
        (0, "0000:03:00.0", 32 * GIB, 30 * GIB),
        (1, "0000:0a:00.0", 8 * GIB, 7 * GIB),
    ]


def test_amd_process_memory_from_fdinfo(tmp_path: Path) -> None:
    """drm-memory-vram of the engine's fds is attributed to the card named by drm-pdev."""
    sysfs, proc = amd_tree(tmp_path)
    assert AmdSysfsProbe(sysfs, proc).process_memory({4242}) == {0: 0, 1: 3 * GIB}


def test_amd_without_drm_is_unavailable(tmp_path: Path) -> None:
    """No /sys/class/drm (amdgpu not loaded yet): GpuUnavailable, which the preflight retries."""
    with pytest.raises(GpuUnavailable):
        AmdSysfsProbe(tmp_path, tmp_path).devices()


def test_nvml_needs_nvidia_uvm(tmp_path: Path) -> None:
    """Without /dev/nvidia-uvm CUDA would fall back to the CPU: GpuUnavailable."""
    with pytest.raises(GpuUnavailable, match="nvidia-uvm"):
        NvmlProbe(dev_root=tmp_path).devices()


@pytest.mark.parametrize(
    ("arch", "cuda"),
    [
        ("sm_120", (12, 8)),
        ("sm_100", (12, 8)),
        ("sm_90", (11, 8)),
        ("sm_89", (11, 8)),
        ("sm_86", None),
        ("gfx906", None),
    ],
)
def test_required_cuda(arch: str, cuda: tuple[int, int] | None) -> None:
    """Blackwell needs CUDA 12.8; Hopper and Ada 11.8; unknown architectures are not judged."""
    assert required_cuda(arch) == cuda


def test_new_driver_passes() -> None:
    """A 570 driver (CUDA 12.8) runs an RTX 5090."""
    assert driver_problem("sm_120", "RTX 5090", DriverInfo("570.86", (12, 8))) is None


@pytest.mark.gpu
def test_real_nvml() -> None:
    """On a host with an NVIDIA GPU: devices, memory and the driver through the real NVML."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        pytest.skip(f"no NVML: {err}")
    if not Path("/dev/nvidia-uvm").exists():
        pytest.skip("/dev/nvidia-uvm missing")
    probe = NvmlProbe()
    devices = probe.devices()
    assert devices
    assert all(d.total > 0 and d.free is not None and 0 <= d.free <= d.total for d in devices)
    assert all(d.uuid and d.uuid.startswith("GPU-") for d in devices)
    driver = probe.driver()
    assert driver is not None
    assert driver.cuda is not None
    assert driver.cuda >= (11, 0)
    assert probe.process_memory({os.getpid()}) == {d.index: 0 for d in devices}
