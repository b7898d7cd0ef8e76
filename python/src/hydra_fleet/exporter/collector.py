"""A prometheus_client Collector that builds fresh metric families from one snapshot.

Every scrape yields new families, so a GPU or a process that went away leaves no stale
series behind.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from importlib import metadata

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from hydra_fleet.exporter.model import DeviceSample, Snapshot

DEVICE = ["vendor", "index", "uuid"]

GAUGES: list[tuple[str, str]] = [
    ("utilization_ratio", "Fraction of time the GPU was busy (0..1)."),
    ("memory_used_bytes", "Device memory in use, in bytes."),
    ("memory_total_bytes", "Device memory, in bytes."),
    ("gtt_used_bytes", "AMD: system memory mapped for the GPU (GTT) in use, in bytes."),
    ("gtt_total_bytes", "AMD: size of the GTT aperture, in bytes."),
    ("power_watts", "Power draw, in watts."),
    ("power_limit_watts", "Enforced power limit, in watts."),
    ("fan_speed_ratio", "Fan speed as a fraction of its maximum (0..1)."),
    ("pcie_link_generation", "Current PCIe link generation."),
    ("pcie_link_width", "Current PCIe link width (lanes)."),
]


def version() -> str:
    try:
        return metadata.version("hydra-fleet")
    except metadata.PackageNotFoundError:
        return "unknown"


class GpuCollector(Collector):
    """Yields the `hydra_gpu_*` families for whatever snapshot `source()` returns."""

    def __init__(self, source: Callable[[], Snapshot | None]) -> None:
        self.source = source
        self.version = version()

    def describe(self) -> list[Metric]:
        # Registering must not trigger a collection.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.source()
        if snapshot is None:
            return
        devices = [d for r in snapshot.results for d in r.devices]
        yield from device_families(devices)
        expected = GaugeMetricFamily(
            "hydra_gpu_expected_devices",
            "GPUs of this vendor in the host's inventory (hydra.gpus).",
            labels=["vendor"],
        )
        for vendor, count in sorted(snapshot.expected_devices.items()):
            expected.add_metric([vendor], count)
        yield expected
        success = GaugeMetricFamily(
            "hydra_gpu_exporter_collector_success",
            "1 when the backend's last collection succeeded.",
            labels=["backend"],
        )
        duration = GaugeMetricFamily(
            "hydra_gpu_exporter_collector_duration_seconds",
            "How long the backend's last collection took.",
            labels=["backend"],
        )
        for result in snapshot.results:
            success.add_metric([result.backend], 1.0 if result.success else 0.0)
            duration.add_metric([result.backend], result.duration_seconds)
        yield success
        yield duration
        build = GaugeMetricFamily(
            "hydra_gpu_exporter_build_info",
            "The exporter's version.",
            labels=["version", "python_version"],
        )
        build.add_metric([self.version, platform.python_version()], 1.0)
        yield build


def device_families(devices: list[DeviceSample]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "hydra_gpu_up", "1 when the GPU answers, 0 when it is lost.", labels=DEVICE
    )
    info = GaugeMetricFamily(
        "hydra_gpu_info",
        "The GPU's identity (always 1).",
        labels=[*DEVICE, "name", "pci_bus_id", "driver_version", "arch"],
    )
    for d in devices:
        up.add_metric(list(d.labels), 1.0 if d.up else 0.0)
        info.add_metric([*d.labels, d.name, d.pci_bus_id, d.driver_version, d.arch], 1.0)
    yield up
    yield info
    for attr, doc in GAUGES:
        family = GaugeMetricFamily(f"hydra_gpu_{attr}", doc, labels=DEVICE)
        for d in devices:
            value = getattr(d, attr)
            if value is not None:
                family.add_metric(list(d.labels), float(value))
        yield family
    energy = CounterMetricFamily(
        "hydra_gpu_energy_joules", "Energy used since the driver loaded, in joules.", labels=DEVICE
    )
    xid = CounterMetricFamily(
        "hydra_gpu_xid_errors", "NVIDIA XID errors seen since the exporter started.", labels=DEVICE
    )
    temp = GaugeMetricFamily(
        "hydra_gpu_temperature_celsius", "Temperature per sensor.", labels=[*DEVICE, "sensor"]
    )
    clock = GaugeMetricFamily(
        "hydra_gpu_clock_hertz", "Current clock per domain.", labels=[*DEVICE, "clock"]
    )
    ecc = CounterMetricFamily(
        "hydra_gpu_ecc_errors", "Memory ECC errors by type.", labels=[*DEVICE, "type"]
    )
    procs = GaugeMetricFamily(
        "hydra_gpu_process_memory_bytes",
        "GPU memory held by a process, with its systemd unit.",
        labels=[*DEVICE, "pid", "comm", "unit"],
    )
    for d in devices:
        labels = list(d.labels)
        if d.energy_joules_total is not None:
            energy.add_metric(labels, d.energy_joules_total)
        if d.xid_errors_total is not None:
            xid.add_metric(labels, d.xid_errors_total)
        for sensor, celsius in sorted(d.temperature_celsius.items()):
            temp.add_metric([*labels, sensor], celsius)
        for name, hertz in sorted(d.clock_hertz.items()):
            clock.add_metric([*labels, name], hertz)
        for kind, count in sorted(d.ecc_errors_total.items()):
            ecc.add_metric([*labels, kind], count)
        for p in d.processes:
            procs.add_metric([*labels, str(p.pid), p.comm, p.unit], float(p.memory_bytes))
    yield from (energy, xid, temp, clock, ecc, procs)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _number(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it: `1.0`, `2.5e+10`, `+Inf`, `NaN`."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def render(collector: Collector) -> bytes:
    """The Prometheus text format (0.0.4) of `collector`, as `generate_latest` writes it.

    Same bytes, a few times faster: the exporter's families are plain gauges and counters
    with fixed, valid names, so the per-label validation and name escaping are skipped.
    """
    out: list[str] = []
    for family in collector.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        order: list[str] | None = None
        for sample in family.samples:
            labels = sample.labels
            if order is None:
                order = sorted(labels)
            if labels:
                text = ",".join([f'{key}="{_escape(labels[key])}"' for key in order])
                out.append(f"{sample.name}{{{text}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode()
