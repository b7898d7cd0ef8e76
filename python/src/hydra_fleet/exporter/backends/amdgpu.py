"""AMD GPUs from the kernel's amdgpu sysfs and hwmon files: no ROCm library needed.

Layout read (as the kernel creates it):
  <sysfs>/class/drm/cardN -> ../../devices/pci…/0000:03:00.0/drm/cardN
  <sysfs>/class/drm/cardN/device/{vendor,device,unique_id,product_name,gpu_busy_percent,
      mem_info_vram_used,mem_info_vram_total,mem_info_gtt_used,mem_info_gtt_total,
      pp_dpm_sclk,pp_dpm_mclk,current_link_speed,current_link_width,power/runtime_status,
      ras/*_err_count}
  <sysfs>/class/drm/cardN/device/hwmon/hwmonM/{power1_average|power1_input,power1_cap,
      energy1_input,tempK_input,tempK_label,pwm1,fan1_input,fan1_max}
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter import procfs
from hydra_fleet.exporter.model import DeviceSample, ProcessSample

log = get_logger("hydra.exporter.amdgpu")

AMD_VENDOR_ID = "0x1002"
_CARD = re.compile(r"card(\d+)")
_DPM = re.compile(r"^\s*\d+:\s*(\d+)\s*([MG]?)hz\s*\*\s*$", re.IGNORECASE | re.MULTILINE)
_PCIE_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def find_cards(sysfs_root: Path) -> list[Path]:
    """The amdgpu cards (PCI vendor 0x1002), in card-number order."""
    drm = sysfs_root / "class" / "drm"
    try:
        names = os.listdir(drm)
    except OSError:
        return []
    cards = sorted((int(m.group(1)), drm / name) for name in names if (m := _CARD.fullmatch(name)))
    return [path for _, path in cards if _read(path / "device" / "vendor") == AMD_VENDOR_ID]


def current_dpm_hertz(text: str | None) -> float | None:
    """The active level (marked `*`) of a pp_dpm_* file, in hertz."""
    if not text:
        return None
    match = _DPM.search(text)
    if match is None:
        return None
    scale = 1e9 if match.group(2).upper() == "G" else 1e6
    return float(match.group(1)) * scale


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
    targets = {}
    nodes = sysfs_root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    try:
        entries = sorted(nodes.iterdir())
    except OSError:
        return {}
    for node in entries:
        props: dict[str, int] = {}
        for line in (_read(node / "properties") or "").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                props[key] = int(value)
        version = props.get("gfx_target_version", 0)
        if not version:
            continue  # a CPU node
        loc = props.get("location_id", 0)
        bus = f"{props.get('domain', 0):04x}:{loc >> 8:02x}:{(loc >> 3) & 0x1F:02x}.{loc & 0x7:x}"
        major, minor, step = version // 10000, (version // 100) % 100, version % 100
        targets[bus] = f"gfx{major}{minor}{step:x}"
    return targets


class AmdgpuBackend:
    name = "amdgpu"

    def __init__(self, sysfs_root: Path, proc_root: Path, *, processes: bool = True) -> None:
        self.sysfs_root = sysfs_root
        self.proc_root = proc_root
        self.processes = processes
        self.cards = find_cards(sysfs_root)
        self.kernel = _read(proc_root / "sys" / "kernel" / "osrelease") or ""
        self.targets = gfx_targets(sysfs_root)

    def collect(self) -> list[DeviceSample]:
        # Cards can come and go (hotplug, driver reload): enumerate on every collection.
        self.cards = find_cards(self.sysfs_root)
        samples = [self._sample(i, card) for i, card in enumerate(self.cards)]
        if self.processes and samples:
            self._attach_processes(samples)
        return samples

    def _sample(self, index: int, card: Path) -> DeviceSample:
        dev = card / "device"
        try:
            bus_id = os.path.basename(os.path.realpath(dev))
        except OSError:
            bus_id = ""
        unique = _read(dev / "unique_id")
        sample = DeviceSample(
            vendor="amd",
            index=str(index),
            uuid=unique or bus_id,
            name=_read(dev / "product_name") or f"AMD GPU {_read(dev / 'device') or ''}".strip(),
            pci_bus_id=bus_id,
            driver_version=_read(Path(self.sysfs_root, "module", "amdgpu", "version"))
            or self.kernel,
            arch=self.targets.get(bus_id, ""),
        )
        total = _int(dev / "mem_info_vram_total")
        if total is None:
            # Every working amdgpu card has this file; without it the device is gone.
            sample.up = False
            return sample
        sample.memory_total_bytes = total
        if _read(dev / "power" / "runtime_status") == "suspended":
            # Reads of a runtime-suspended card wake it or return junk: report what is static.
            return sample
        busy = _int(dev / "gpu_busy_percent")
        sample.utilization_ratio = None if busy is None else busy / 100
        sample.memory_used_bytes = _int(dev / "mem_info_vram_used")
        sample.gtt_total_bytes = _int(dev / "mem_info_gtt_total")
        sample.gtt_used_bytes = _int(dev / "mem_info_gtt_used")
        for key, clock in (("pp_dpm_sclk", "graphics"), ("pp_dpm_mclk", "memory")):
            hertz = current_dpm_hertz(_read(dev / key))
            if hertz is not None:
                sample.clock_hertz[clock] = hertz
        sample.pcie_link_generation = pcie_generation(_read(dev / "current_link_speed"))
        sample.pcie_link_width = _int(dev / "current_link_width")
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
            cap = _int(hwmon / "power1_cap")
            if cap is not None:
                sample.power_limit_watts = cap / 1e6
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
        per_pid: dict[tuple[str, int], int] = defaultdict(int)
        for client in procfs.drm_clients(self.proc_root, "amdgpu"):
            if client.pdev in by_bus:
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
