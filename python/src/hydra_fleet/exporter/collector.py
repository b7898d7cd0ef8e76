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
    (
        "memory_utilization_ratio",
        "Fraction of time the memory controller was busy (NVIDIA) or memory activity (AMD).",
    ),
    ("encoder_utilization_ratio", "NVIDIA: fraction of time the video encoder was busy."),
    ("decoder_utilization_ratio", "NVIDIA: fraction of time the video decoder was busy."),
    ("memory_used_bytes", "Device memory in use, in bytes."),
    ("memory_free_bytes", "Device memory free, in bytes."),
    ("memory_total_bytes", "Device memory, in bytes."),
    ("gtt_used_bytes", "AMD: system memory mapped for the GPU (GTT) in use, in bytes."),
    ("gtt_total_bytes", "AMD: size of the GTT aperture, in bytes."),
    ("power_watts", "Power draw, in watts."),
    ("power_limit_watts", "Enforced power limit, in watts."),
    ("power_limit_min_watts", "Lowest power limit that can be set, in watts."),
    ("power_limit_max_watts", "Highest power limit that can be set, in watts."),
    ("power_limit_default_watts", "The card's default power limit, in watts."),
    ("performance_state", "NVIDIA performance state (P-state): 0 is the fastest, 15 the slowest."),
    ("fan_speed_ratio", "Fan speed as a fraction of its maximum (0..1)."),
    ("pcie_link_generation", "Current PCIe link generation."),
    ("pcie_link_width", "Current PCIe link width (lanes)."),
    ("pcie_link_max_generation", "Highest PCIe link generation the card and slot support."),
    ("pcie_link_max_width", "Widest PCIe link the card and slot support (lanes)."),
    ("retired_pages_pending", "NVIDIA: 1 when memory pages wait to be retired (needs a reset)."),
    ("remapped_rows_pending", "NVIDIA: 1 when memory rows wait to be remapped (needs a reset)."),
    ("remapped_rows_failed", "NVIDIA: 1 when a row remapping failed (the card needs service)."),
    ("xid_last_code", "NVIDIA: the code of the last XID error seen since the exporter started."),
]
COUNTERS: list[tuple[str, str]] = [
    ("energy_joules", "Energy used since the driver loaded, in joules."),
    ("xid_errors", "NVIDIA XID errors seen since the exporter started."),
    ("pcie_replay_errors", "PCIe replays (link-level retransmissions) since the driver loaded."),
    ("pcie_transmit_bytes", "Bytes the GPU sent over PCIe since the driver loaded."),
    ("pcie_receive_bytes", "Bytes the GPU received over PCIe since the driver loaded."),
]
# Families with one extra label: (attribute, label, type, help).
LABELLED: list[tuple[str, str, str, str]] = [
    ("temperature_celsius", "sensor", "gauge", "Temperature per sensor."),
    ("clock_hertz", "clock", "gauge", "Current clock per domain."),
    ("clock_min_hertz", "clock", "gauge", "Lowest clock per domain."),
    ("clock_max_hertz", "clock", "gauge", "Highest clock per domain."),
    (
        "clock_event_active",
        "reason",
        "gauge",
        "NVIDIA: 1 while this reason holds the clocks down (clock-event / throttle reasons).",
    ),
    (
        "clock_throttle_seconds_total",
        "reason",
        "counter",
        "NVIDIA: time the clocks were held down by this policy since the driver loaded.",
    ),
    ("ecc_errors_total", "type", "counter", "Memory ECC errors by type."),
    ("retired_pages", "cause", "gauge", "NVIDIA: memory pages retired, by cause."),
    ("remapped_rows", "cause", "gauge", "NVIDIA: memory rows remapped, by cause."),
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
    for attr, doc in COUNTERS:
        counter = CounterMetricFamily(f"hydra_gpu_{attr}", doc, labels=DEVICE)
        for d in devices:
            value = getattr(d, f"{attr}_total")
            if value is not None:
                counter.add_metric(list(d.labels), float(value))
        yield counter
    for attr, label, kind, doc in LABELLED:
        name = f"hydra_gpu_{attr.removesuffix('_total')}"
        labelled: CounterMetricFamily | GaugeMetricFamily = (
            CounterMetricFamily(name, doc, labels=[*DEVICE, label])
            if kind == "counter"
            else GaugeMetricFamily(name, doc, labels=[*DEVICE, label])
        )
        for d in devices:
            for key, number in sorted(getattr(d, attr).items()):
                labelled.add_metric([*d.labels, key], float(number))
        yield labelled
    procs = GaugeMetricFamily(
        "hydra_gpu_process_memory_bytes",
        "GPU memory held by a process, with its systemd unit.",
        labels=[*DEVICE, "pid", "comm", "unit"],
    )
    for d in devices:
        for p in d.processes:
            procs.add_metric([*d.labels, str(p.pid), p.comm, p.unit], float(p.memory_bytes))
    yield procs


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
