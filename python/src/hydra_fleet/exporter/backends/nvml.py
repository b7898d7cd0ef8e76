"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as `pynvml`), called in-process.

NVML is initialised once and device handles are kept. Errors are sorted the way the driver
means them: a lifecycle error (GPU lost, driver gone or upgraded under us) marks the device
down and re-initialises NVML on a later collection; NOT_SUPPORTED and friends omit the one
metric; anything else on one reading omits it and is logged once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pynvml

from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter import procfs
from hydra_fleet.exporter.model import DeviceSample, ProcessSample

log = get_logger("hydra.exporter.nvml")

T = TypeVar("T")

LIFECYCLE_ERRORS = frozenset(
    {
        pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_GPU_NOT_FOUND,
        pynvml.NVML_ERROR_RESET_REQUIRED,
    }
)
UNSUPPORTED_ERRORS = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NO_DATA,
    }
)

# Read in one nvmlDeviceGetFieldValues call per device.
FIELDS: dict[str, int] = {
    "energy_mj": pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
    "memory_temp": pynvml.NVML_FI_DEV_MEMORY_TEMP,
    "ecc_corrected": pynvml.NVML_FI_DEV_ECC_SBE_AGG_TOTAL,
    "ecc_uncorrected": pynvml.NVML_FI_DEV_ECC_DBE_AGG_TOTAL,
    "pcie_replay": pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER,
    "pcie_tx_bytes": pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
    "pcie_rx_bytes": pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES,
    "retired_single_bit": pynvml.NVML_FI_DEV_RETIRED_SBE,
    "retired_double_bit": pynvml.NVML_FI_DEV_RETIRED_DBE,
    "retired_pending": pynvml.NVML_FI_DEV_RETIRED_PENDING,
    "remapped_correctable": pynvml.NVML_FI_DEV_REMAPPED_COR,
    "remapped_uncorrectable": pynvml.NVML_FI_DEV_REMAPPED_UNC,
    "remapped_pending": pynvml.NVML_FI_DEV_REMAPPED_PENDING,
    "remapped_failure": pynvml.NVML_FI_DEV_REMAPPED_FAILURE,
}
# nvmlDeviceGetCurrentClocksEventReasons bits, by the `reason` label they get.
CLOCK_EVENT_REASONS: dict[str, int] = {
    "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
    "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
    "sw_thermal_slowdown": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "hw_thermal_slowdown": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "hw_power_brake_slowdown": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "display_clock_setting": pynvml.nvmlClocksEventReasonDisplayClockSetting,
}
# nvmlDeviceGetViolationStatus policies (violation time in nanoseconds).
THROTTLE_POLICIES: dict[str, int] = {
    "power": pynvml.NVML_PERF_POLICY_POWER,
    "thermal": pynvml.NVML_PERF_POLICY_THERMAL,
    "sync_boost": pynvml.NVML_PERF_POLICY_SYNC_BOOST,
    "board_limit": pynvml.NVML_PERF_POLICY_BOARD_LIMIT,
    "low_utilization": pynvml.NVML_PERF_POLICY_LOW_UTILIZATION,
    "reliability": pynvml.NVML_PERF_POLICY_RELIABILITY,
}
UNKNOWN_PSTATE = 32
CLOCKS = {
    "graphics": pynvml.NVML_CLOCK_GRAPHICS,
    "sm": pynvml.NVML_CLOCK_SM,
    "memory": pynvml.NVML_CLOCK_MEM,
    "video": pynvml.NVML_CLOCK_VIDEO,
}


class DeviceLost(Exception):  # noqa: N818 - a state, not a programming error
    """A lifecycle error: the device (or the driver) went away."""


def field_value(value: Any) -> float | None:
    """The number in one c_nvmlFieldValue_t, or None when that field failed."""
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        return None
    kind = value.valueType
    union = value.value
    by_type = {
        pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
    }
    attr = by_type.get(kind)
    return None if attr is None else float(getattr(union, attr))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    name: str
    pci_bus_id: str
    arch: str
    xid: int = 0
    xid_last: int | None = None
    xid_watched: bool = False
    lost: bool = False


@dataclass
class _Warned:
    seen: set[tuple[str, str]] = field(default_factory=set)


class NvmlBackend:
    name = "nvml"

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        nvml: types.ModuleType | Any = pynvml,
        processes: bool = True,
        watch_xid: bool = True,
    ) -> None:
        self.nvml = nvml
        self.proc_root = proc_root
        self.processes = processes
        self.watch_xid = watch_xid
        self.devices: list[_Device] = []
        self.driver_version = ""
        self.initialised = False
        self.init_error = ""
        self.lock = threading.Lock()
        self._warned = _Warned()
        self._stop = threading.Event()
        self._xid_thread: threading.Thread | None = None

    def start(self) -> None:
        """Initialise NVML and open every device; raises pynvml.NVMLError when it cannot."""
        with self.lock:
            self._init()

    # Lifecycle -------------------------------------------------------------------------

    def _init(self) -> None:
        nvml = self.nvml
        nvml.nvmlInit()
        self.initialised = True
        self.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            arch = ""
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                arch = f"sm_{major}{minor}"
            except pynvml.NVMLError as err:
                if err.value in LIFECYCLE_ERRORS:
                    raise
            devices.append(
                _Device(
                    index=index,
                    handle=handle,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                    arch=arch,
                )
            )
        # Keep XID counts across a re-init of the same cards.
        old = {d.uuid: d for d in self.devices}
        for device in devices:
            if device.uuid in old:
                device.xid, device.xid_last = old[device.uuid].xid, old[device.uuid].xid_last
        self.devices = devices
        if self.watch_xid:
            self._start_xid_thread()

    def _shutdown(self) -> None:
        self._stop_xid_thread()
        if self.initialised:
            self.initialised = False
            try:
                self.nvml.nvmlShutdown()
            except pynvml.NVMLError as err:
                log.debug("nvml shutdown failed", error=str(err))

    def _reinit(self) -> bool:
        self._shutdown()
        try:
            self._init()
        except pynvml.NVMLError as err:
            if self.devices:
                log.warning("nvml re-init failed, retrying on the next scrape", error=str(err))
            self.init_error = str(err)
            return False
        log.info("nvml re-initialised", devices=len(self.devices))
        return True

    def close(self) -> None:
        with self.lock:
            self._shutdown()

    # Collection ------------------------------------------------------------------------

    def collect(self) -> list[DeviceSample]:
        with self.lock:
            if (not self.initialised or any(d.lost for d in self.devices)) and not self._reinit():
                if not self.devices:
                    raise RuntimeError(f"NVML is not available: {self.init_error}")
                return [self._down(d) for d in self.devices]
            samples = [self._sample(d) for d in self.devices]
            if any(d.lost for d in self.devices):
                log.warning(
                    "gpu lost, nvml will be re-initialised",
                    uuids=",".join(d.uuid for d in self.devices if d.lost),
                )
            return samples

    def _down(self, device: _Device) -> DeviceSample:
        return DeviceSample(
            vendor="nvidia",
            index=str(device.index),
            uuid=device.uuid,
            up=False,
            name=device.name,
            pci_bus_id=device.pci_bus_id,
            driver_version=self.driver_version,
            arch=device.arch,
        )

    def _call(self, device: _Device, what: str, fn: Callable[[], T]) -> T | None:
        """One NVML reading: None when unsupported or failed; DeviceLost on lifecycle errors."""
        try:
            return fn()
        except pynvml.NVMLError as err:
            if err.value in LIFECYCLE_ERRORS:
                raise DeviceLost(str(err)) from err
            if (device.uuid, what) not in self._warned.seen:
                self._warned.seen.add((device.uuid, what))
                level = log.debug if err.value in UNSUPPORTED_ERRORS else log.warning
                level("nvml reading omitted", uuid=device.uuid, reading=what, error=str(err))
            return None

    def _sample(self, device: _Device) -> DeviceSample:
        sample = self._down(device)
        try:
            self._read(device, sample)
        except DeviceLost as err:
            device.lost = True
            log.warning("gpu lost", uuid=device.uuid, index=device.index, error=str(err))
            return self._down(device)
        sample.up = True
        return sample

    def _read(self, device: _Device, sample: DeviceSample) -> None:
        nvml, handle = self.nvml, device.handle
        memory = self._call(
            device, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle, nvml.nvmlMemory_v2)
        )
        if memory is None:
            memory = self._call(device, "memory_v1", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        if memory is not None:
            sample.memory_total_bytes = float(memory.total)
            sample.memory_used_bytes = float(memory.used)
            sample.memory_free_bytes = float(memory.free)
        self._utilization(device, sample)
        self._power(device, sample)
        temp = self._temperature(device)
        if temp is not None:
            sample.temperature_celsius["gpu"] = float(temp)
        fan = self._call(device, "fan", lambda: nvml.nvmlDeviceGetFanSpeed(handle))
        if fan is not None:
            sample.fan_speed_ratio = fan / 100
        for clock, kind in CLOCKS.items():
            mhz = self._call(
                device,
                f"clock_{clock}",
                functools.partial(nvml.nvmlDeviceGetClockInfo, handle, kind),
            )
            if mhz is not None:
                sample.clock_hertz[clock] = mhz * 1e6
            top = self._call(
                device,
                f"max_clock_{clock}",
                functools.partial(nvml.nvmlDeviceGetMaxClockInfo, handle, kind),
            )
            if top:
                sample.clock_max_hertz[clock] = top * 1e6
        self._clock_events(device, sample)
        sample.pcie_link_generation = self._call(
            device, "pcie_gen", lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)
        )
        sample.pcie_link_width = self._call(
            device, "pcie_width", lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)
        )
        sample.pcie_link_max_generation = self._call(
            device, "pcie_max_gen", lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)
        )
        sample.pcie_link_max_width = self._call(
            device, "pcie_max_width", lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(handle)
        )
        self._fields(device, sample)
        if device.xid_watched:
            sample.xid_errors_total = float(device.xid)
            if device.xid_last is not None:
                sample.xid_last_code = float(device.xid_last)
        if self.processes:
            sample.processes = self._processes(device)

    def _utilization(self, device: _Device, sample: DeviceSample) -> None:
        nvml, handle = self.nvml, device.handle
        rates = self._call(
            device, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle)
        )
        if rates is not None:
            sample.utilization_ratio = rates.gpu / 100
            sample.memory_utilization_ratio = rates.memory / 100
        encoder = self._call(
            device, "encoder", lambda: nvml.nvmlDeviceGetEncoderUtilization(handle)
        )
        if encoder is not None:
            sample.encoder_utilization_ratio = encoder[0] / 100
        decoder = self._call(
            device, "decoder", lambda: nvml.nvmlDeviceGetDecoderUtilization(handle)
        )
        if decoder is not None:
            sample.decoder_utilization_ratio = decoder[0] / 100
        pstate = self._call(device, "pstate", lambda: nvml.nvmlDeviceGetPerformanceState(handle))
        if pstate is not None and pstate != UNKNOWN_PSTATE:
            sample.performance_state = int(pstate)

    def _power(self, device: _Device, sample: DeviceSample) -> None:
        nvml, handle = self.nvml, device.handle
        power = self._call(device, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        if power is not None:
            sample.power_watts = power / 1000
        limit = self._call(
            device, "power_limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
        )
        if limit is not None:
            sample.power_limit_watts = limit / 1000
        constraints = self._call(
            device,
            "power_limit_constraints",
            lambda: nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle),
        )
        if constraints is not None:
            sample.power_limit_min_watts = constraints[0] / 1000
            sample.power_limit_max_watts = constraints[1] / 1000
        default = self._call(
            device,
            "power_limit_default",
            lambda: nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle),
        )
        if default is not None:
            sample.power_limit_default_watts = default / 1000

    def _temperature(self, device: _Device) -> int | None:
        nvml, handle = self.nvml, device.handle
        if hasattr(nvml, "nvmlDeviceGetTemperatureV"):
            try:
                return int(nvml.nvmlDeviceGetTemperatureV(handle, nvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError as err:
                if err.value in LIFECYCLE_ERRORS:
                    raise DeviceLost(str(err)) from err
                # Older drivers lack the versioned call: fall back below.
        return self._call(
            device,
            "temperature",
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        )

    def _clock_events(self, device: _Device, sample: DeviceSample) -> None:
        nvml, handle = self.nvml, device.handle
        # Renamed from "throttle reasons" in driver 535; older drivers only have the old name.
        reasons_of = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )
        if reasons_of is not None:
            mask = self._call(device, "clock_event_reasons", functools.partial(reasons_of, handle))
            if mask is not None:
                for reason, bit in CLOCK_EVENT_REASONS.items():
                    sample.clock_event_active[reason] = 1.0 if int(mask) & bit else 0.0
        for policy, kind in THROTTLE_POLICIES.items():
            status = self._call(
                device,
                f"violation_{policy}",
                functools.partial(nvml.nvmlDeviceGetViolationStatus, handle, kind),
            )
            if status is not None:
                sample.clock_throttle_seconds_total[policy] = status.violationTime / 1e9

    def _fields(self, device: _Device, sample: DeviceSample) -> None:
        ids = list(FIELDS.values())
        values = self._call(
            device, "field_values", lambda: self.nvml.nvmlDeviceGetFieldValues(device.handle, ids)
        )
        if values is None:
            return
        got: dict[str, float] = {}
        for name, value in zip(FIELDS, values, strict=False):
            if value.nvmlReturn in LIFECYCLE_ERRORS:
                raise DeviceLost(f"field {name}: NVML return {value.nvmlReturn}")
            number = field_value(value)
            if number is not None:
                got[name] = number
        if "energy_mj" in got:
            sample.energy_joules_total = got["energy_mj"] / 1000
        if "memory_temp" in got and got["memory_temp"] > 0:
            sample.temperature_celsius["memory"] = got["memory_temp"]
        for kind in ("corrected", "uncorrected"):
            if f"ecc_{kind}" in got:
                sample.ecc_errors_total[kind] = got[f"ecc_{kind}"]
        sample.pcie_replay_errors_total = got.get("pcie_replay")
        sample.pcie_transmit_bytes_total = got.get("pcie_tx_bytes")
        sample.pcie_receive_bytes_total = got.get("pcie_rx_bytes")
        for cause in ("single_bit", "double_bit"):
            if f"retired_{cause}" in got:
                sample.retired_pages[cause] = got[f"retired_{cause}"]
        sample.retired_pages_pending = got.get("retired_pending")
        for cause in ("correctable", "uncorrectable"):
            if f"remapped_{cause}" in got:
                sample.remapped_rows[cause] = got[f"remapped_{cause}"]
        sample.remapped_rows_pending = got.get("remapped_pending")
        sample.remapped_rows_failed = got.get("remapped_failure")

    def _processes(self, device: _Device) -> list[ProcessSample]:
        nvml, handle = self.nvml, device.handle
        used: dict[int, int] = {}
        for what, fn in (
            ("compute_processes", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics_processes", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            for proc in self._call(device, what, functools.partial(fn, handle)) or []:
                memory = proc.usedGpuMemory
                if memory is not None:  # None under WDDM or without permission
                    used[proc.pid] = max(used.get(proc.pid, 0), int(memory))
        return [
            ProcessSample(
                pid, procfs.comm(self.proc_root, pid), procfs.unit(self.proc_root, pid), memory
            )
            for pid, memory in sorted(used.items())
        ]

    # XID events ------------------------------------------------------------------------

    def _start_xid_thread(self) -> None:
        nvml = self.nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except pynvml.NVMLError as err:
            log.info("xid events unavailable", error=str(err))
            return
        for device in self.devices:
            try:
                nvml.nvmlDeviceRegisterEvents(
                    device.handle, nvml.nvmlEventTypeXidCriticalError, event_set
                )
                device.xid_watched = True
            except pynvml.NVMLError as err:
                log.info("xid events unsupported", uuid=device.uuid, error=str(err))
        by_handle = {id(d.handle): d for d in self.devices}
        self._stop = threading.Event()
        self._xid_thread = threading.Thread(
            target=self._watch_xid,
            args=(event_set, by_handle, self._stop),
            name="nvml-xid",
            daemon=True,
        )
        self._xid_thread.start()

    def _watch_xid(
        self, event_set: Any, by_handle: dict[int, _Device], stop: threading.Event
    ) -> None:
        nvml = self.nvml
        try:
            while not stop.is_set():
                try:
                    # ctypes releases the GIL while NVML waits.
                    event = nvml.nvmlEventSetWait(event_set, 500)
                except pynvml.NVMLError as err:
                    if err.value == pynvml.NVML_ERROR_TIMEOUT:
                        continue
                    log.warning("xid event wait failed", error=str(err))
                    stop.wait(5.0)
                    continue
                device = self._device_of(event.device, by_handle)
                if device is not None:
                    device.xid += 1
                    device.xid_last = int(event.eventData)
                    log.warning("xid error", uuid=device.uuid, xid=device.xid_last)
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                nvml.nvmlEventSetFree(event_set)

    def _device_of(self, handle: Any, by_handle: dict[int, _Device]) -> _Device | None:
        if id(handle) in by_handle:
            return by_handle[id(handle)]
        # ctypes hands back a fresh handle object: compare by UUID.
        try:
            uuid = _text(self.nvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:
            return None
        return next((d for d in by_handle.values() if d.uuid == uuid), None)

    def _stop_xid_thread(self) -> None:
        if self._xid_thread is not None:
            self._stop.set()
            self._xid_thread.join(timeout=2.0)
            self._xid_thread = None
