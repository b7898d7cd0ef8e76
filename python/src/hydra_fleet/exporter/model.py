"""What a backend reports: one `DeviceSample` per GPU, in base units."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Protocol


@dataclasses.dataclass
class ProcessSample:
    pid: int
    comm: str
    unit: str
    memory_bytes: int


@dataclasses.dataclass
class DeviceSample:
    """One GPU. None (or a missing key) means "not supported here": the series is omitted."""

    vendor: str
    index: str
    uuid: str
    up: bool = True
    name: str = ""
    pci_bus_id: str = ""
    driver_version: str = ""
    arch: str = ""
    utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    gtt_used_bytes: float | None = None
    gtt_total_bytes: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules_total: float | None = None
    temperature_celsius: dict[str, float] = field(default_factory=dict)
    fan_speed_ratio: float | None = None
    clock_hertz: dict[str, float] = field(default_factory=dict)
    pcie_link_generation: int | None = None
    pcie_link_width: int | None = None
    ecc_errors_total: dict[str, float] = field(default_factory=dict)
    xid_errors_total: float | None = None
    processes: list[ProcessSample] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.vendor, self.index, self.uuid)


@dataclasses.dataclass
class BackendResult:
    backend: str
    success: bool
    duration_seconds: float
    devices: list[DeviceSample] = field(default_factory=list)


@dataclasses.dataclass
class Snapshot:
    results: list[BackendResult]
    expected_devices: dict[str, int]


class Backend(Protocol):
    """A source of device samples. `collect` runs in a worker thread.

    It raises only when the whole backend failed (library gone); a device that fails is
    returned with `up=False`.
    """

    name: str

    def collect(self) -> list[DeviceSample]: ...

    def close(self) -> None: ...
