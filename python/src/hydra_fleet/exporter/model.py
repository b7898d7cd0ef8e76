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
    # Memory controller (NVIDIA) / memory activity (AMD `mem_busy_percent`), 0..1.
    memory_utilization_ratio: float | None = None
    encoder_utilization_ratio: float | None = None
    decoder_utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_free_bytes: float | None = None
    memory_total_bytes: float | None = None
    gtt_used_bytes: float | None = None
    gtt_total_bytes: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    power_limit_min_watts: float | None = None
    power_limit_max_watts: float | None = None
    power_limit_default_watts: float | None = None
    # NVIDIA P-state: 0 (fastest) .. 15.
    performance_state: int | None = None
    energy_joules_total: float | None = None
    temperature_celsius: dict[str, float] = field(default_factory=dict)
    fan_speed_ratio: float | None = None
    clock_hertz: dict[str, float] = field(default_factory=dict)
    clock_min_hertz: dict[str, float] = field(default_factory=dict)
    clock_max_hertz: dict[str, float] = field(default_factory=dict)
    # Why clocks are held down now: reason -> 0/1 (NVIDIA clock-event reasons).
    clock_event_active: dict[str, float] = field(default_factory=dict)
    # Time clocks were held down by each policy since the driver loaded, in seconds.
    clock_throttle_seconds_total: dict[str, float] = field(default_factory=dict)
    pcie_link_generation: int | None = None
    pcie_link_width: int | None = None
    pcie_link_max_generation: int | None = None
    pcie_link_max_width: int | None = None
    pcie_replay_errors_total: float | None = None
    pcie_transmit_bytes_total: float | None = None
    pcie_receive_bytes_total: float | None = None
    ecc_errors_total: dict[str, float] = field(default_factory=dict)
    # Pages retired (NVIDIA up to Turing) / rows remapped (Ampere+), by cause.
    retired_pages: dict[str, float] = field(default_factory=dict)
    retired_pages_pending: float | None = None
    remapped_rows: dict[str, float] = field(default_factory=dict)
    remapped_rows_pending: float | None = None
    remapped_rows_failed: float | None = None
    xid_errors_total: float | None = None
    xid_last_code: float | None = None
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
