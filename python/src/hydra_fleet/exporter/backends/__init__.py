"""GPU backends, and the choice of which to run (`auto` finds every vendor present)."""

from __future__ import annotations

import os
from pathlib import Path

import pynvml

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend, find_cards
from hydra_fleet.exporter.backends.nvml import NvmlBackend
from hydra_fleet.exporter.backends.pyrsmi import PyrsmiBackend, PyrsmiUnavailableError
from hydra_fleet.exporter.backends.synthetic import SyntheticBackend
from hydra_fleet.exporter.config import ExporterConfig
from hydra_fleet.exporter.model import Backend

log = get_logger("hydra.exporter")


def _check_readable(source: str, key: str, path: Path) -> None:
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(source, key, f"expected a readable directory, {path} is not one")


def build_backends(config: ExporterConfig, source: str) -> list[Backend]:
    """The backends the config asks for, started. Raises ConfigError for bad paths."""
    wanted = list(dict.fromkeys(config.backends))
    if {"auto", "amdgpu"} & set(wanted):
        _check_readable(source, "sysfsRoot", config.sysfs_root)
        _check_readable(source, "procRoot", config.proc_root)
        if config.pci_ids_file is not None and not os.access(config.pci_ids_file, os.R_OK):
            raise ConfigError(
                source, "pciIdsFile", f"expected a readable file, {config.pci_ids_file} is not one"
            )
    backends: list[Backend] = []
    if "auto" in wanted:
        backends += _auto(config)
    if "nvml" in wanted:
        nvml = NvmlBackend(config.proc_root, processes=config.process_metrics)
        try:
            nvml.start()
        except pynvml.NVMLError as err:
            log.warning("nvml not available yet, retrying on every scrape", error=str(err))
        backends.append(nvml)
    if "amdgpu" in wanted:
        amd = AmdgpuBackend(
            config.sysfs_root,
            config.proc_root,
            processes=config.process_metrics,
            pci_ids=config.pci_ids_file,
        )
        if not amd.cards:
            log.warning("no amdgpu card found", sysfs=str(config.sysfs_root / "class" / "drm"))
        backends.append(amd)
    if "pyrsmi" in wanted:
        rsmi = PyrsmiBackend()
        try:
            rsmi.start()
        except PyrsmiUnavailableError as err:
            log.warning("pyrsmi backend unavailable", error=str(err))
        backends.append(rsmi)
    if "synthetic" in wanted:
        backends.append(SyntheticBackend(config.synthetic.devices))
    return backends


def _auto(config: ExporterConfig) -> list[Backend]:
    found: list[Backend] = []
    nvml = NvmlBackend(config.proc_root, processes=config.process_metrics)
    try:
        nvml.start()
    except pynvml.NVMLError as err:
        log.debug("auto: no nvml", error=str(err))
    else:
        if nvml.devices:
            found.append(nvml)
        else:
            nvml.close()
    if find_cards(config.sysfs_root):
        found.append(
            AmdgpuBackend(
                config.sysfs_root,
                config.proc_root,
                processes=config.process_metrics,
                pci_ids=config.pci_ids_file,
            )
        )
    if found:
        log.info("auto: backends found", backends=",".join(b.name for b in found))
    else:
        log.warning(
            "auto: no GPU found (no NVML device, no amdgpu card under "
            f"{config.sysfs_root}/class/drm); serving exporter metrics only. "
            "For demo GPUs run with --backend synthetic"
        )
    return found
