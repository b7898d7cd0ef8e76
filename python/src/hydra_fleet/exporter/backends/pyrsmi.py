"""AMD GPUs through ROCm's SMI library (pyrsmi), used only for what sysfs does not give.

pyrsmi reports utilisation, memory, power and fan but no temperatures or clocks, returns -1
or '' for what it cannot read and logs each failure at ERROR. When the amdgpu backend also
runs, the two are merged by PCI bus id and pyrsmi only fills readings sysfs left empty.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter.model import DeviceSample

log = get_logger("hydra.exporter.pyrsmi")


def bus_id(bdf: int) -> str:
    """pyrsmi's 64-bit BDF -> `0000:03:00.0`."""
    domain, bus, device, function = bdf >> 32, (bdf >> 8) & 0xFF, (bdf >> 3) & 0x1F, bdf & 0x7
    return f"{domain & 0xFFFFFFFF:04x}:{bus:02x}:{device:02x}.{function:x}"


def _number(value: Any) -> float | None:
    """pyrsmi's convention: -1 (or a non-number) means "could not read"."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


class _DropPyrsmiRecords(logging.Filter):
    """pyrsmi logs every reading it cannot make through the root logger at ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pyrsmi" not in record.pathname


class PyrsmiUnavailableError(RuntimeError):
    """ROCm's SMI library could not be loaded or initialised."""


class PyrsmiBackend:
    name = "pyrsmi"

    def __init__(self, rocml: types.ModuleType | Any | None = None) -> None:
        self._rocml = rocml
        self.initialised = False

    def _load(self) -> Any:
        if self._rocml is None:
            try:
                from pyrsmi import rocml  # noqa: PLC0415 - optional dependency
            except ImportError as err:
                raise PyrsmiUnavailableError(
                    "pyrsmi is not installed (use the hydra-fleet-rocm package)"
                ) from err
            self._rocml = rocml
            logging.getLogger().addFilter(_DropPyrsmiRecords())
        return self._rocml

    def start(self) -> None:
        rocml = self._load()
        try:
            rocml.smi_initialize()
        except Exception as err:  # pyrsmi raises RuntimeError, its own classes, OSError
            raise PyrsmiUnavailableError(f"ROCm SMI library not available: {err}") from err
        self.initialised = True

    def collect(self) -> list[DeviceSample]:
        if not self.initialised:
            self.start()
        rocml = self._load()
        samples = []
        for dev in range(int(rocml.smi_get_device_count())):
            pci = _number(rocml.smi_get_device_pci_id(dev))
            bus = bus_id(int(pci)) if pci is not None else ""
            uuid = str(rocml.smi_get_device_uuid(dev, "raw") or "") or bus
            sample = DeviceSample(
                vendor="amd",
                index=str(dev),
                uuid=uuid,
                name=str(rocml.smi_get_device_name(dev) or ""),
                pci_bus_id=bus,
                driver_version=str(rocml.smi_get_kernel_version() or ""),
            )
            busy = _number(rocml.smi_get_device_utilization(dev))
            sample.utilization_ratio = None if busy is None else busy / 100
            sample.memory_used_bytes = _number(rocml.smi_get_device_memory_used(dev))
            sample.memory_total_bytes = _number(rocml.smi_get_device_memory_total(dev))
            sample.power_watts = _number(rocml.smi_get_device_average_power(dev))
            fan = _number(rocml.smi_get_device_fan_speed(dev))
            top = _number(rocml.smi_get_device_fan_speed_max(dev))
            if fan is not None and top:
                sample.fan_speed_ratio = min(fan / top, 1.0)
            samples.append(sample)
        return samples

    def close(self) -> None:
        if self.initialised and self._rocml is not None:
            self.initialised = False
            try:
                self._rocml.smi_shutdown()
            except Exception as err:  # noqa: BLE001 - shutting down; nothing to do about it
                log.debug("pyrsmi shutdown failed", error=str(err))


FILLABLE = (
    "utilization_ratio",
    "memory_used_bytes",
    "memory_total_bytes",
    "power_watts",
    "fan_speed_ratio",
)


def fill_gaps(base: list[DeviceSample], extra: list[DeviceSample]) -> list[DeviceSample]:
    """Fill readings missing from `base` (amdgpu) with pyrsmi's for the same PCI device.

    Returns pyrsmi's devices that sysfs does not know, to be reported on their own.
    """
    by_bus = {s.pci_bus_id: s for s in base if s.pci_bus_id}
    alone = []
    for sample in extra:
        target = by_bus.get(sample.pci_bus_id)
        if target is None:
            alone.append(sample)
            continue
        if not target.up:
            continue
        for name in FILLABLE:
            if getattr(target, name) is None and getattr(sample, name) is not None:
                setattr(target, name, getattr(sample, name))
    return alone
