"""The exporter's configuration file (JSON keys mirror `services.hydra-gpu-exporter`)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal, get_args

from hydra_fleet.core.config import FieldProblem, Host, Port, in_range, non_empty

BackendName = Literal["auto", "nvml", "amdgpu", "pyrsmi", "synthetic"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
SyntheticVendor = Literal["synthetic", "nvidia", "amd"]


@dataclasses.dataclass(frozen=True)
class SyntheticProcess:
    """One process holding memory on a synthetic GPU."""

    pid: Annotated[int, in_range(1)]
    comm: str
    memory_bytes: Annotated[int, in_range(0)]
    unit: str = ""


@dataclasses.dataclass(frozen=True)
class SyntheticDevice:
    """A GPU described in the config. Its series carry vendor="synthetic"; `vendor` picks
    which hardware it imitates (which optional metrics it reports)."""

    name: Annotated[str, non_empty]
    memory_bytes: Annotated[int, in_range(1)]
    vendor: SyntheticVendor = "synthetic"
    lost: bool = False
    processes: list[SyntheticProcess] = field(default_factory=list)
    # Adds this many generated processes (for demos and the benchmark).
    process_count: Annotated[int, in_range(0, 100_000)] = 0


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    devices: list[SyntheticDevice] = field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    listen_address: Host = "127.0.0.1"
    port: Port = 9445
    backends: Annotated[list[BackendName], non_empty] = field(default_factory=lambda: ["auto"])
    # Inventory count per vendor, exported as hydra_gpu_expected_devices{vendor}.
    expected_devices: dict[str, Annotated[int, in_range(0)]] = field(default_factory=dict)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sysfs_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    # PCI ID database for AMD model names sysfs lacks; None: the usual places (see
    # hydra_fleet.gpu.pciids.DEFAULT_PATHS: the system's hwdata, then /usr/share).
    pci_ids_file: Path | None = None
    # A collection still running after this many seconds is given up on for this scrape.
    collect_timeout: Annotated[float, in_range(0.05, 300)] = 5.0
    # Per-process VRAM series (pid churns series; turn off on very busy hosts).
    process_metrics: bool = True

    def __post_init__(self) -> None:
        if "synthetic" in self.backends and not self.synthetic.devices:
            raise FieldProblem(
                "synthetic.devices",
                "the synthetic backend is enabled but no devices are described; "
                'add e.g. [{"name": "demo", "memoryBytes": 25769803776}]',
            )
        if "auto" in self.backends and len(self.backends) > 1:
            extra = sorted({b for b in self.backends if b not in ("auto", "synthetic", "pyrsmi")})
            if extra:
                raise FieldProblem(
                    "backends",
                    f"'auto' already includes {', '.join(extra)}; list either 'auto' or "
                    "the backends themselves",
                )
