"""A GPU probe that behaves like NvmlProbe: unavailable for a while, then devices."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra_fleet.launcher.config import Vendor
from hydra_fleet.launcher.gpu_probe import DeviceState, DriverInfo, GpuUnavailable


@dataclass
class FakeGpus:
    devices_: list[DeviceState]
    driver_: DriverInfo | None = field(default_factory=lambda: DriverInfo("580.65", (13, 0)))
    unavailable_calls: int = 0  # the first N calls raise GpuUnavailable, like a driver loading
    held: dict[int, int] | None = field(default_factory=dict)  # index -> bytes held by the pids
    vendor: Vendor = "nvidia"
    calls: int = 0
    memory_queries: list[set[int]] = field(default_factory=list)
    answers: list[dict[int, int]] = field(default_factory=list)

    def devices(self) -> list[DeviceState]:
        self.calls += 1
        if self.calls <= self.unavailable_calls:
            raise GpuUnavailable("/dev/nvidia-uvm missing (nvidia_uvm not loaded)")
        return list(self.devices_)

    def driver(self) -> DriverInfo | None:
        return self.driver_

    def process_memory(self, pids: set[int]) -> dict[int, int] | None:
        """Like NVML: memory is held only while one of the processes is alive."""
        self.memory_queries.append(set(pids))
        if self.held is None:
            return None
        alive = any(_alive(pid) for pid in pids)
        answer = {index: (held if alive else 0) for index, held in self.held.items()}
        self.answers.append(answer)
        return answer


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or exiting while being read
        return False
    return stat[stat.rfind(")") + 2] != "Z"


GIB = 1024**3


def device(
    index: int, gib: float, free_gib: float | None = None, uuid: str | None = None
) -> DeviceState:
    free = None if free_gib is None else int(free_gib * GIB)
    return DeviceState(index, uuid or f"GPU-{index:04d}", f"gpu{index}", int(gib * GIB), free)
