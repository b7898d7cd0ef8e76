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
    # DRM probed the W7500 (bus 0a) first: card order differs from PCI order.
    cards = [
        ("card0", "0000:0a:00.0", "0x1002", 8 * GIB, 1 * GIB),
        ("card1", "0000:00:02.0", "0x8086", None, None),
        ("card2", "0000:03:00.0", "0x1002", 32 * GIB, 2 * GIB),
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
        "drm-driver:\tamdgpu\ndrm-pdev:\t0000:0a:00.0\ndrm-client-id:\t21\n"
        "drm-memory-vram:\t3145728 KiB\n"
    )
    # The same DRM file through a dup'ed fd: one client, counted once.
    (fdinfo / "9").write_text((fdinfo / "7").read_text())
    (fdinfo / "8").write_text("pos:\t0\nflags:\t02\n")
    return sysfs, proc


def test_amd_fdinfo_units_and_shared_clients(tmp_path: Path) -> None:
    """Sizes in any unit the kernel writes (MiB, GiB, bytes); a client shared by a forked
    child is counted once, for the parent."""
    sysfs, proc = amd_tree(tmp_path)
    for pid, fd, client, vram in (
        (5000, 4, 31, "2048 MiB"),
        (5001, 4, 31, "2048 MiB"),  # forked child: same client id
        (5000, 5, 32, "1 GiB"),
        (5000, 6, 33, "1048576"),
    ):
        path = proc / str(pid) / "fdinfo" / str(fd)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"drm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\ndrm-client-id:\t{client}\n"
            f"drm-memory-vram:\t{vram}\n"
        )
    held = AmdSysfsProbe(sysfs, proc).process_memory({5000, 5001})
    assert held == {0: 3 * GIB + 1024**2, 1: 0}


def test_amd_process_memory_from_kfd(tmp_path: Path) -> None:
    """A ROCm process's VRAM from KFD's world-readable files, mapped to the card by gpu_id."""
    sysfs, proc = amd_tree(tmp_path)
    nodes = sysfs / "class/kfd/kfd/topology/nodes"
    for node, (gpu_id, location) in enumerate([(4242, 0x0300), (777, 0x0A00)], start=1):
        (nodes / str(node)).mkdir(parents=True)
        (nodes / str(node) / "gpu_id").write_text(f"{gpu_id}\n")
        (nodes / str(node) / "properties").write_text(
            f"gfx_target_version 90006\nlocation_id {location}\ndomain 0\n"
        )
    kfd = sysfs / "class/kfd/kfd/proc/6000"
    kfd.mkdir(parents=True)
    (kfd / "vram_4242").write_text(f"{5 * GIB}\n")
    (kfd / "vram_777").write_text("0\n")
    assert AmdSysfsProbe(sysfs, proc).process_memory({6000}) == {0: 5 * GIB, 1: 0}
    # Not asked about: not counted.
    assert AmdSysfsProbe(sysfs, proc).process_memory({4242}) == {0: 0, 1: 3 * GIB}


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
