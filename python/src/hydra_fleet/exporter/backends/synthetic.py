"""GPUs described in the config, for VM tests, demos and the benchmark."""

from __future__ import annotations

import math
import time
import uuid as uuidlib

from hydra_fleet.exporter.config import SyntheticDevice
from hydra_fleet.exporter.model import DeviceSample, ProcessSample

FIRST_GENERATED_PID = 10_000


class SyntheticBackend:
    name = "synthetic"

    def __init__(self, devices: list[SyntheticDevice]) -> None:
        self.devices = devices
        self.started = time.monotonic()
        self._processes = [self._processes_of(i, d) for i, d in enumerate(devices)]

    @staticmethod
    def _processes_of(index: int, device: SyntheticDevice) -> list[ProcessSample]:
        listed = [ProcessSample(p.pid, p.comm, p.unit, p.memory_bytes) for p in device.processes]
        per_process = device.memory_bytes // (4 * max(device.process_count, 1))
        generated = [
            ProcessSample(
                FIRST_GENERATED_PID + index * 100_000 + n,
                f"worker-{n}",
                f"synthetic-{index}.service",
                per_process,
            )
            for n in range(device.process_count)
        ]
        return listed + generated

    def collect(self) -> list[DeviceSample]:
        now = time.monotonic() - self.started
        return [self._sample(i, d, now) for i, d in enumerate(self.devices)]

    def _sample(self, index: int, device: SyntheticDevice, now: float) -> DeviceSample:
        ident = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"hydra-synthetic/{index}/{device.name}"))
        sample = DeviceSample(
            vendor="synthetic",
            index=str(index),
            uuid=f"SYN-{ident}",
            name=device.name,
            pci_bus_id=f"0000:{index + 1:02x}:00.0",
            driver_version="synthetic",
            arch={"nvidia": "sm_89", "amd": "gfx1102"}.get(device.vendor, "synthetic"),
        )
        if device.lost:
            # What a GPU that fell off the bus looks like: identity known, nothing readable.
            sample.up = False
            return sample
        wave = 0.5 + 0.5 * math.sin(now / 10 + index)
        used = sum(p.memory_bytes for p in self._processes[index])
        sample.utilization_ratio = round(wave, 3)
        sample.memory_total_bytes = device.memory_bytes
        sample.memory_used_bytes = min(used, device.memory_bytes)
        sample.memory_free_bytes = device.memory_bytes - sample.memory_used_bytes
        sample.memory_utilization_ratio = round(wave / 2, 3)
        sample.power_limit_watts = 300.0
        sample.power_limit_min_watts = 100.0
        sample.power_limit_max_watts = 350.0
        sample.power_limit_default_watts = 300.0
        sample.power_watts = round(40 + 200 * wave, 1)
        sample.fan_speed_ratio = round(0.3 + 0.4 * wave, 3)
        sample.clock_hertz = {"graphics": 1.5e9 + 1e9 * wave, "memory": 1.0e10}
        sample.clock_max_hertz = {"graphics": 2.5e9, "memory": 1.0e10}
        sample.pcie_link_generation = 4
        sample.pcie_link_width = 16
        sample.pcie_link_max_generation = 4
        sample.pcie_link_max_width = 16
        sample.pcie_replay_errors_total = 0
        sample.processes = self._processes[index]
        if device.vendor == "amd":
            sample.temperature_celsius = {
                "edge": 40 + 30 * wave,
                "junction": 45 + 35 * wave,
                "mem": 50 + 20 * wave,
            }
            sample.gtt_total_bytes = 16 * 1024**3
            sample.gtt_used_bytes = 64 * 1024**2
        else:
            sample.temperature_celsius = {"gpu": round(40 + 30 * wave, 1)}
            sample.energy_joules_total = round(120 * now, 3)
        if device.vendor == "amd":
            sample.clock_min_hertz = {"graphics": 5e8, "memory": 9.6e7}
        if device.vendor == "nvidia":
            sample.ecc_errors_total = {"corrected": 0, "uncorrected": 0}
            sample.xid_errors_total = 0
            sample.encoder_utilization_ratio = 0.0
            sample.decoder_utilization_ratio = round(wave / 4, 3)
            sample.performance_state = 2 if wave > 0.2 else 8
            # Idle in the trough of the wave, power-capped at its crest.
            sample.clock_event_active = {
                "gpu_idle": 1.0 if wave <= 0.5 else 0.0,
                "sw_power_cap": 1.0 if wave > 0.5 else 0.0,
                "hw_thermal_slowdown": 0.0,
            }
            sample.clock_throttle_seconds_total = {"power": round(now / 10, 3), "thermal": 0.0}
            sample.pcie_transmit_bytes_total = round(2e8 * now)
            sample.pcie_receive_bytes_total = round(1e9 * now)
            sample.remapped_rows = {"correctable": 0.0, "uncorrectable": 0.0}
            sample.remapped_rows_pending = 0.0
            sample.remapped_rows_failed = 0.0
        return sample

    def close(self) -> None:
        pass
