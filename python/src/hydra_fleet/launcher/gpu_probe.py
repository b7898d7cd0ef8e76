"""The GPU boundary: what the devices are, how much is free, who holds memory.

`GpuProbe` is the small interface the preflight and the supervisor use; `NvmlProbe`
(NVIDIA, through NVML, after checking `/dev/nvidia-uvm`) and `AmdSysfsProbe` (amdgpu sysfs,
KFD and DRM fdinfo, through the discovery shared with the exporter) are the real ones. Every
failure to see a device is a `GpuUnavailable`, which the preflight retries and finally
reports as exit 75.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hydra_fleet.gpu import discovery, fdinfo
from hydra_fleet.gpu.discovery import PciGpu
from hydra_fleet.launcher.config import Vendor


class GpuUnavailable(Exception):  # noqa: N818 - reads as "raise GpuUnavailable(why)"
    """The GPUs cannot be seen (yet): driver not loaded, device node missing, NVML failing."""


@dataclass(frozen=True)
class DeviceState:
    index: int
    uuid: str | None
    name: str
    total: int
    free: int | None


@dataclass(frozen=True)
class DriverInfo:
    version: str
    cuda: tuple[int, int] | None  # highest CUDA version the driver supports


class GpuProbe(Protocol):
    vendor: Vendor

    def devices(self) -> list[DeviceState]:
        """Every device of this vendor. Raises GpuUnavailable."""

    def driver(self) -> DriverInfo | None:
        """The driver, when the vendor library says. Raises GpuUnavailable."""

    def process_memory(self, pids: set[int]) -> dict[int, int] | None:
        """Bytes held by `pids` per device index; None when it cannot be told."""


# Blackwell (sm_100, sm_120, ...) needs CUDA 12.8 (driver 570); Hopper/Ada CUDA 11.8 (520).
_CUDA_FOR_ARCH = {
    10: (12, 8),
    11: (12, 8),
    12: (12, 8),
    9: (11, 8),
}
_DRIVER_FOR_CUDA = {(12, 8): "570", (11, 8): "520"}
_ADA = (11, 8)


def required_cuda(arch: str) -> tuple[int, int] | None:
    """The lowest CUDA version whose driver runs `arch` (`sm_120` -> (12, 8))."""
    match = re.fullmatch(r"sm_(\d+?)(\d)a?", arch)
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    if major == 8 and minor == 9:
        return _ADA
    return _CUDA_FOR_ARCH.get(major)


def driver_problem(arch: str, model: str, driver: DriverInfo) -> str | None:
    need = required_cuda(arch)
    if need is None or driver.cuda is None or driver.cuda >= need:
        return None
    family = "Blackwell" if need == (12, 8) else "this architecture"
    return (
        f"{model} ({arch}, {family}) needs a driver with CUDA {need[0]}.{need[1]} or later "
        f"(driver {_DRIVER_FOR_CUDA.get(need, '?')}+); the loaded driver {driver.version} "
        f"supports CUDA {driver.cuda[0]}.{driver.cuda[1]}"
    )


class NvmlProbe:
    """NVIDIA through NVML (`pynvml`); `/dev/nvidia-uvm` must exist first (CUDA needs it)."""

    vendor: Vendor = "nvidia"

    def __init__(self, dev_root: Path = Path("/dev")) -> None:
        self.dev_root = dev_root
        self._ready = False

    def _init(self) -> None:
        import pynvml  # noqa: PLC0415 - only NVIDIA hosts need the library loaded

        if not (self.dev_root / "nvidia-uvm").exists():
            raise GpuUnavailable(f"{self.dev_root / 'nvidia-uvm'} missing (nvidia_uvm not loaded)")
        if self._ready:
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise GpuUnavailable(f"NVML: {err}") from err
        self._ready = True

    def devices(self) -> list[DeviceState]:
        import pynvml  # noqa: PLC0415

        self._init()
        try:
            found = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                found.append(
                    DeviceState(
                        index=index,
                        uuid=str(pynvml.nvmlDeviceGetUUID(handle)),
                        name=str(pynvml.nvmlDeviceGetName(handle)),
                        total=int(memory.total),
                        free=int(memory.free),
                    )
                )
        except pynvml.NVMLError as err:
            raise GpuUnavailable(f"NVML: {err}") from err
        return found

    def driver(self) -> DriverInfo | None:
        import pynvml  # noqa: PLC0415

        self._init()
        try:
            version = str(pynvml.nvmlSystemGetDriverVersion())
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        except pynvml.NVMLError as err:
            raise GpuUnavailable(f"NVML: {err}") from err
        return DriverInfo(version, (cuda // 1000, (cuda % 1000) // 10))

    def process_memory(self, pids: set[int]) -> dict[int, int] | None:
        import pynvml  # noqa: PLC0415

        try:
            self._init()
            held: dict[int, int] = {}
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                held[index] = sum(int(p.usedGpuMemory or 0) for p in procs if p.pid in pids)
        except (pynvml.NVMLError, GpuUnavailable):
            return None
        return held


class AmdSysfsProbe:
    """AMD through amdgpu sysfs (`mem_info_vram_*`), KFD's per-process files and DRM fdinfo.

    Cards are numbered in PCI bus order, as ROCm and the exporter number them
    (`hydra_fleet.gpu.discovery`).
    """

    vendor: Vendor = "amd"

    def __init__(self, sysfs: Path = Path("/sys"), proc: Path = Path("/proc")) -> None:
        self.sysfs = sysfs
        self.proc = proc

    def _cards(self) -> list[PciGpu]:
        return [
            c
            for c in discovery.amd_cards(self.sysfs)
            if (c.device / "mem_info_vram_total").exists()
        ]

    def devices(self) -> list[DeviceState]:
        if not (self.sysfs / "class/drm").is_dir():
            raise GpuUnavailable(f"{self.sysfs / 'class/drm'} missing (amdgpu not loaded)")
        found = []
        for card in self._cards():
            device = card.device
            try:
                total = int((device / "mem_info_vram_total").read_text())
                used = int((device / "mem_info_vram_used").read_text())
            except (OSError, ValueError) as err:
                raise GpuUnavailable(f"{device}: {err}") from err
            uuid = discovery.read_text(device / "unique_id") or None
            found.append(DeviceState(card.index, uuid, card.bus_id, total, total - used))
        return found

    def driver(self) -> DriverInfo | None:
        return None

    def process_memory(self, pids: set[int]) -> dict[int, int] | None:
        cards = self._cards()
        by_pci = {c.bus_id: c.index for c in cards}
        held = dict.fromkeys(by_pci.values(), 0)
        nodes = discovery.kfd_nodes(self.sysfs)
        by_gpu_id = {n.gpu_id: by_pci[bus] for bus, n in nodes.items() if bus in by_pci}
        # ROCm processes: KFD's files (world-readable); the others: DRM fdinfo.
        in_kfd: set[int] = set()
        for (pid, gpu_id), vram in discovery.kfd_process_vram(self.sysfs, pids).items():
            if gpu_id in by_gpu_id:
                held[by_gpu_id[gpu_id]] += vram
                in_kfd.add(pid)
        for client in fdinfo.drm_clients(self.proc, "amdgpu", pids - in_kfd):
            if client.pdev in by_pci:
                held[by_pci[client.pdev]] += client.vram_bytes
        return held


def probe_for(vendor: Vendor) -> GpuProbe:
    return NvmlProbe() if vendor == "nvidia" else AmdSysfsProbe()
