# ruff: noqa: N802 - the stand-in keeps pynvml's camelCase function names
"""A stand-in for the `pynvml` module at the boundary we cannot reach without a GPU.

It keeps pynvml's calling conventions and return types (ctypes structures for memory,
utilisation, field values and events) and raises the real `pynvml.NVMLError` subclasses,
so the backend's error handling meets exactly what the library would raise.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml


def error(code: int) -> pynvml.NVMLError:
    # pynvml.NVMLError.__new__ picks the subclass: NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost.
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    uuid: str
    name: str
    bus_id: str
    capability: tuple[int, int] = (8, 9)
    total: int = 24 * 1024**3
    used: int = 3 * 1024**3
    util: int = 42
    power_mw: int = 123_456
    limit_mw: int = 450_000
    temp: int = 61
    fan: int | None = 30
    clocks_mhz: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_CLOCK_GRAPHICS: 2520,
            pynvml.NVML_CLOCK_SM: 2520,
            pynvml.NVML_CLOCK_MEM: 10501,
            pynvml.NVML_CLOCK_VIDEO: 1950,
        }
    )
    pcie: tuple[int, int] = (4, 16)
    max_pcie: tuple[int, int] = (4, 16)
    # RTX 4090 as nvidia-smi -q reports it: limits 150/600 W, default 450 W; boost 3120 MHz.
    limits_mw: tuple[int, int] | None = (150_000, 600_000)
    default_limit_mw: int = 450_000
    max_clocks_mhz: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_CLOCK_GRAPHICS: 3120,
            pynvml.NVML_CLOCK_SM: 3120,
            pynvml.NVML_CLOCK_MEM: 10501,
            pynvml.NVML_CLOCK_VIDEO: 2415,
        }
    )
    pstate: int = 2
    encoder: int | None = 0
    decoder: int | None = 7
    memory_util: int = 10
    clock_event_mask: int = pynvml.nvmlClocksEventReasonSwPowerCap
    # Violation time in ns per NVML_PERF_POLICY_*; missing policies are NOT_SUPPORTED.
    violations_ns: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_PERF_POLICY_POWER: 12_500_000_000,
            pynvml.NVML_PERF_POLICY_THERMAL: 0,
        }
    )
    energy_mj: int = 7_654_321
    ecc: tuple[int, int] | None = None  # consumer cards: NOT_SUPPORTED
    # Field id -> value for the other nvmlDeviceGetFieldValues fields; absent: NOT_SUPPORTED.
    fields: dict[int, int] = field(
        default_factory=lambda: {pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: 3}
    )
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    lost: bool = False


class FakeNvml:
    """The subset of pynvml the backend calls."""

    def __init__(
        self, gpus: list[FakeGpu], *, temperature_v: bool = True, driver_loaded: bool = True
    ) -> None:
        self.gpus = gpus
        self.driver_loaded = driver_loaded
        self.init_calls = 0
        self.shutdown_calls = 0
        self.events: queue.Queue[tuple[int, int]] = queue.Queue()
        self.lock = threading.Lock()
        if temperature_v:
            self.nvmlDeviceGetTemperatureV = self._temperature_v

    def __getattr__(self, name: str) -> Any:
        # Constants (NVML_*, nvmlEventType*, nvmlMemory_v2) come from the real module.
        if name.startswith(("NVML_", "nvmlEventType", "nvmlMemory_v")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def _gpu(self, handle: int) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.driver_loaded:
            raise error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        if any(g.lost for g in self.gpus):
            # A card off the bus makes initialisation fail until it is back.
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.95.05"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetPciInfo(self, handle: int) -> Any:
        return SimpleNamespace(busId=self._gpu(handle).bus_id)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self._gpu(handle).capability

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> Any:
        gpu = self._gpu(handle)
        info = pynvml.c_nvmlMemory_v2_t() if version else pynvml.c_nvmlMemory_t()
        info.total, info.used, info.free = gpu.total, gpu.used, gpu.total - gpu.used
        return info

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        rates = pynvml.c_nvmlUtilization_t()
        gpu = self._gpu(handle)
        rates.gpu, rates.memory = gpu.util, gpu.memory_util
        return rates

    def nvmlDeviceGetEncoderUtilization(self, handle: int) -> list[int]:
        value = self._gpu(handle).encoder
        if value is None:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [value, 167_000]

    def nvmlDeviceGetDecoderUtilization(self, handle: int) -> list[int]:
        value = self._gpu(handle).decoder
        if value is None:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [value, 167_000]

    def nvmlDeviceGetPerformanceState(self, handle: int) -> int:
        return self._gpu(handle).pstate

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> list[int]:
        limits = self._gpu(handle).limits_mw
        if limits is None:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return list(limits)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: int) -> int:
        return self._gpu(handle).default_limit_mw

    def nvmlDeviceGetMaxClockInfo(self, handle: int, clock: int) -> int:
        return self._gpu(handle).max_clocks_mhz[clock]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle).max_pcie[0]

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: int) -> int:
        return self._gpu(handle).max_pcie[1]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu(handle).clock_event_mask

    def nvmlDeviceGetViolationStatus(self, handle: int, policy: int) -> Any:
        gpu = self._gpu(handle)
        if policy not in gpu.violations_ns:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        status = pynvml.c_nvmlViolationTime_t()
        status.referenceTime, status.violationTime = (
            1_700_000_000_000_000,
            gpu.violations_ns[policy],
        )
        return status

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._gpu(handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._gpu(handle).limit_mw

    def _temperature_v(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temp

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temp

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:
        fan = self._gpu(handle).fan
        if fan is None:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return fan

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return self._gpu(handle).clocks_mhz[clock]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle).pcie[0]

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: int) -> int:
        return self._gpu(handle).pcie[1]

    def nvmlDeviceGetFieldValues(self, handle: int, ids: list[int]) -> Any:
        gpu = self._gpu(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(ids))()
        for value, fid in zip(values, ids, strict=True):
            value.fieldId = fid
            value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            value.nvmlReturn = pynvml.NVML_SUCCESS
            if fid == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
                value.value.ullVal = gpu.energy_mj
            elif fid == pynvml.NVML_FI_DEV_MEMORY_TEMP:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED  # GDDR cards
            elif fid in (
                pynvml.NVML_FI_DEV_ECC_SBE_AGG_TOTAL,
                pynvml.NVML_FI_DEV_ECC_DBE_AGG_TOTAL,
            ):
                if gpu.ecc is None:
                    value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                else:
                    sbe = fid == pynvml.NVML_FI_DEV_ECC_SBE_AGG_TOTAL
                    value.value.ullVal = gpu.ecc[0] if sbe else gpu.ecc[1]
            elif fid in gpu.fields:
                value.value.ullVal = gpu.fields[fid]
            else:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self._gpu(handle).processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        self._gpu(handle)
        return []

    # Events
    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlDeviceRegisterEvents(self, handle: int, types: int, event_set: object) -> None:
        assert types == pynvml.nvmlEventTypeXidCriticalError
        self._gpu(handle)

    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> Any:
        try:
            handle, xid = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise error(pynvml.NVML_ERROR_TIMEOUT) from None
        return SimpleNamespace(
            device=handle, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid
        )

    def nvmlEventSetFree(self, event_set: object) -> None:
        pass
