"""AMD GPUs from the kernel's amdgpu sysfs and hwmon files: no ROCm library needed.

Layout read (as the kernel creates it):
  <sysfs>/class/drm/cardN -> ../../devices/pci…/0000:03:00.0/drm/cardN
  <sysfs>/class/drm/cardN/device/{vendor,device,unique_id,product_name,gpu_busy_percent,
      mem_info_vram_used,mem_info_vram_total,mem_info_gtt_used,mem_info_gtt_total,
      mem_busy_percent,pp_dpm_sclk,pp_dpm_mclk,current_link_speed,current_link_width,
      max_link_speed,max_link_width,pcie_replay_count,subsystem_vendor,subsystem_device,
      power/runtime_status,ras/*_err_count}
  <sysfs>/class/drm/cardN/device/hwmon/hwmonM/{power1_average|power1_input,power1_cap,
      power1_cap_min,power1_cap_max,power1_cap_default,energy1_input,tempK_input,tempK_label,
      pwm1,fan1_input,fan1_max}
  <sysfs>/class/kfd/kfd/topology/nodes/N/{properties,gpu_id}
  <sysfs>/class/kfd/kfd/proc/<pid>/vram_<gpu_id>     per-process VRAM, world-readable

Cards are numbered in PCI bus order (as ROCm numbers them), not in DRM card order.
Per-process VRAM comes from KFD's sysfs, which needs no privilege; DRM fdinfo adds the
non-ROCm clients the exporter may read (its own user's) without CAP_SYS_PTRACE.

`pcie_bw` is not read: the kernel sleeps a whole second in every read of it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter import procfs
from hydra_fleet.exporter.model import DeviceSample, ProcessSample
from hydra_fleet.gpu import discovery, pciids
from hydra_fleet.gpu.discovery import PciGpu, read_text

log = get_logger("hydra.exporter.amdgpu")

AMD_VENDOR_ID = discovery.AMD_VENDOR_ID
_DPM = re.compile(r"^\s*\d+:\s*(\d+)\s*([MG]?)hz\s*(\*?)\s*$", re.IGNORECASE | re.MULTILINE)
_PCIE_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}

_read = read_text


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def find_cards(sysfs_root: Path) -> list[PciGpu]:
    """The amdgpu cards (PCI vendor 0x1002), in PCI bus order."""
    return discovery.amd_cards(sysfs_root)


def dpm_levels(text: str | None) -> tuple[list[float], float | None]:
    """Every level of a pp_dpm_* file in hertz, and the active one (marked `*`)."""
    if not text:
        return [], None
    levels: list[float] = []
    active = None
    for match in _DPM.finditer(text):
        scale = 1e9 if match.group(2).upper() == "G" else 1e6
        hertz = float(match.group(1)) * scale
        levels.append(hertz)
        if match.group(3):
            active = hertz
    return levels, active


def current_dpm_hertz(text: str | None) -> float | None:
    """The active level (marked `*`) of a pp_dpm_* file, in hertz."""
    return dpm_levels(text)[1]


def pcie_generation(speed: str | None) -> int | None:
    """`16.0 GT/s PCIe` -> 4."""
    if not speed:
        return None
    try:
        rate = float(speed.split()[0])
    except (ValueError, IndexError):
        return None
    return _PCIE_GEN.get(rate)


def gfx_targets(sysfs_root: Path) -> dict[str, str]:
    """PCI bus id -> gfx target (`gfx906`), from the KFD topology's node properties."""
    return {bus: node.gfx_target for bus, node in discovery.kfd_nodes(sysfs_root).items()}


class AmdgpuBackend:
    name = "amdgpu"

    def __init__(
        self,
        sysfs_root: Path,
        proc_root: Path,
        *,
        processes: bool = True,
        pci_ids: Path | None = None,
    ) -> None:
        self.sysfs_root = sysfs_root
        self.proc_root = proc_root
        self.processes = processes
        self.pci_ids = pciids.find_database(pci_ids)
        self.cards = find_cards(sysfs_root)
        self.kernel = _read(proc_root / "sys" / "kernel" / "osrelease") or ""
        self.nodes = discovery.kfd_nodes(sysfs_root)

    def collect(self) -> list[DeviceSample]:
        # Cards can come and go (hotplug, driver reload): enumerate on every collection.
        self.cards = find_cards(self.sysfs_root)
        if any(card.bus_id not in self.nodes for card in self.cards):
            self.nodes = discovery.kfd_nodes(self.sysfs_root)
        samples = [self._sample(card) for card in self.cards]
        if self.processes and samples:
            self._attach_processes(samples)
        return samples

    def _name(self, card: PciGpu) -> str:
        dev = card.device
        product = _read(dev / "product_name")
        if product:
            return product
        name = pciids.model_name(
            self.pci_ids,
            card.vendor_id,
            card.device_id,
            _read(dev / "subsystem_vendor"),
            _read(dev / "subsystem_device"),
        )
        return name or f"AMD GPU {card.device_id}".strip()

    def _sample(self, card: PciGpu) -> DeviceSample:
        dev = card.device
        bus_id = card.bus_id
        unique = _read(dev / "unique_id")
        node = self.nodes.get(bus_id)
        sample = DeviceSample(
            vendor="amd",
            index=str(card.index),
            uuid=unique or bus_id,
            name=self._name(card),
            pci_bus_id=bus_id,
            driver_version=_read(Path(self.sysfs_root, "module", "amdgpu", "version"))
            or self.kernel,
            arch=node.gfx_target if node else "",
        )
        total = _int(dev / "mem_info_vram_total")
        if total is None:
            # Every working amdgpu card has this file; without it the device is gone.
            sample.up = False
            return sample
        sample.memory_total_bytes = total
        # PCI config space: readable without waking the card.
        sample.pcie_link_max_generation = pcie_generation(_read(dev / "max_link_speed"))
        sample.pcie_link_max_width = _int(dev / "max_link_width")
        if _read(dev / "power" / "runtime_status") == "suspended":
            # Reads of a runtime-suspended card wake it or return junk: report what is static.
            return sample
        busy = _int(dev / "gpu_busy_percent")
        sample.utilization_ratio = None if busy is None else busy / 100
        memory_busy = _int(dev / "mem_busy_percent")
        sample.memory_utilization_ratio = None if memory_busy is None else memory_busy / 100
        used = _int(dev / "mem_info_vram_used")
        sample.memory_used_bytes = used
        sample.memory_free_bytes = None if used is None else max(total - used, 0)
        sample.gtt_total_bytes = _int(dev / "mem_info_gtt_total")
        sample.gtt_used_bytes = _int(dev / "mem_info_gtt_used")
        for key, clock in (("pp_dpm_sclk", "graphics"), ("pp_dpm_mclk", "memory")):
            levels, hertz = dpm_levels(_read(dev / key))
            if hertz is not None:
                sample.clock_hertz[clock] = hertz
            if levels:
                sample.clock_min_hertz[clock] = min(levels)
                sample.clock_max_hertz[clock] = max(levels)
        sample.pcie_link_generation = pcie_generation(_read(dev / "current_link_speed"))
        sample.pcie_link_width = _int(dev / "current_link_width")
        replays = _int(dev / "pcie_replay_count")
        sample.pcie_replay_errors_total = None if replays is None else float(replays)
        self._ras(dev, sample)
        self._hwmon(dev, sample)
        return sample

    @staticmethod
    def _ras(dev: Path, sample: DeviceSample) -> None:
        try:
            files = sorted((dev / "ras").glob("*_err_count"))
        except OSError:
            return
        totals: dict[str, float] = {}
        for path in files:
            for line in (_read(path) or "").splitlines():
                kind, _, count = line.partition(":")
                name = {"ue": "uncorrected", "ce": "corrected"}.get(kind.strip())
                if name and count.strip().isdigit():
                    totals[name] = totals.get(name, 0) + int(count)
        sample.ecc_errors_total = totals

    @staticmethod
    def _hwmon(dev: Path, sample: DeviceSample) -> None:
        try:
            hwmons = sorted((dev / "hwmon").iterdir())
        except OSError:
            return
        for hwmon in hwmons:
            power = _int(hwmon / "power1_average")
            power = power if power is not None else _int(hwmon / "power1_input")
            if power is not None:
                sample.power_watts = power / 1e6
            for name, attr in (
                ("power1_cap", "power_limit_watts"),
                ("power1_cap_min", "power_limit_min_watts"),
                ("power1_cap_max", "power_limit_max_watts"),
                ("power1_cap_default", "power_limit_default_watts"),
            ):
                cap = _int(hwmon / name)
                if cap is not None:
                    setattr(sample, attr, cap / 1e6)
            energy = _int(hwmon / "energy1_input")
            if energy is not None:
                sample.energy_joules_total = energy / 1e6
            for temp in sorted(hwmon.glob("temp*_input")):
                value = _int(temp)
                if value is None:
                    continue
                number = temp.name[len("temp") : -len("_input")]
                label = _read(hwmon / f"temp{number}_label") or f"temp{number}"
                sample.temperature_celsius[label] = value / 1000
            pwm = _int(hwmon / "pwm1")
            if pwm is not None:
                pwm_max = _int(hwmon / "pwm1_max") or 255
                sample.fan_speed_ratio = min(pwm / pwm_max, 1.0)
            else:
                rpm, rpm_max = _int(hwmon / "fan1_input"), _int(hwmon / "fan1_max")
                if rpm is not None and rpm_max:
                    sample.fan_speed_ratio = min(rpm / rpm_max, 1.0)

    def _attach_processes(self, samples: list[DeviceSample]) -> None:
        by_bus = {s.pci_bus_id: s for s in samples}
        bus_of_gpu_id = {node.gpu_id: bus for bus, node in self.nodes.items() if node.gpu_id}
        per_pid: dict[tuple[str, int], int] = defaultdict(int)
        # ROCm processes: KFD's per-process files, world-readable.
        for (pid, gpu_id), vram in discovery.kfd_process_vram(self.sysfs_root).items():
            bus = bus_of_gpu_id.get(gpu_id)
            if bus in by_bus:
                per_pid[(bus, pid)] += vram
        kfd_pids = {pid for _, pid in per_pid}
        # Other DRM clients (Vulkan, OpenGL): fdinfo, where readable without privilege.
        for client in procfs.drm_clients(self.proc_root, "amdgpu"):
            if client.pdev in by_bus and client.pid not in kfd_pids:
                per_pid[(client.pdev, client.pid)] += client.vram_bytes
        for (bus, pid), vram in sorted(per_pid.items()):
            if vram == 0:
                continue
            by_bus[bus].processes.append(
                ProcessSample(
                    pid, procfs.comm(self.proc_root, pid), procfs.unit(self.proc_root, pid), vram
                )
            )

    def close(self) -> None:
        pass
