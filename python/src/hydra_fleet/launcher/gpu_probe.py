"""The GPU boundary: what the devices are, how much is free, who holds memory.

`GpuProbe` is the small interface the preflight and the supervisor use; `NvmlProbe` (NVIDIA,
through NVML, after checking `/dev/nvidia-uvm`) and `AmdSysfsProbe` (amdgpu sysfs and DRM
fdinfo) are the real ones. Every failure to see a device is a `GpuUnavailable`, which the
preflight retries and finally reports as exit 75.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
    """AMD through amdgpu sysfs (`mem_info_vram_*`) and DRM fdinfo (`drm-memory-vram`)."""

    vendor: Vendor = "amd"

    def __init__(self, sysfs: Path = Path("/sys"), proc: Path = Path("/proc")) -> None:
        self.sysfs = sysfs
        self.proc = proc

    def _cards(self) -> list[Path]:
        found = []
        for card in sorted((self.sysfs / "class/drm").glob("card[0-9]*")):
            device = card / "device"
            if not re.fullmatch(r"card\d+", card.name):
                continue
            try:
                vendor = (device / "vendor").read_text().strip()
            except OSError:
                continue
            if vendor == "0x1002" and (device / "mem_info_vram_total").exists():
                found.append(device)
        # ROCm numbers devices in PCI bus order.
        return sorted(found, key=lambda d: d.resolve().name)

    def devices(self) -> list[DeviceState]:
        if not (self.sysfs / "class/drm").is_dir():
            raise GpuUnavailable(f"{self.sysfs / 'class/drm'} missing (amdgpu not loaded)")
        found = []
        for index, device in enumerate(self._cards()):
            try:
                total = int((device / "mem_info_vram_total").read_text())
                used = int((device / "mem_info_vram_used").read_text())
            except (OSError, ValueError) as err:
                raise GpuUnavailable(f"{device}: {err}") from err
            uid_file = device / "unique_id"
            uuid = uid_file.read_text().strip() if uid_file.exists() else None
            found.append(DeviceState(index, uuid, device.resolve().name, total, total - used))
        return found

    def driver(self) -> DriverInfo | None:
        return None

    def process_memory(self, pids: set[int]) -> dict[int, int] | None:
        by_pci = {d.resolve().name: i for i, d in enumerate(self._cards())}
        held = dict.fromkeys(by_pci.values(), 0)
        for pid in pids:
            for fdinfo in (self.proc / str(pid) / "fdinfo").glob("*"):
                try:
                    text = fdinfo.read_text()
                except OSError:
                    continue
                pdev = re.search(r"^drm-pdev:\s*(\S+)", text, re.MULTILINE)
                vram = re.search(r"^drm-memory-vram:\s*(\d+)\s*KiB", text, re.MULTILINE)
                if pdev and vram and pdev.group(1) in by_pci:
                    held[by_pci[pdev.group(1)]] += int(vram.group(1)) * 1024
        return held


def probe_for(vendor: Vendor) -> GpuProbe:
    return NvmlProbe() if vendor == "nvidia" else AmdSysfsProbe()
