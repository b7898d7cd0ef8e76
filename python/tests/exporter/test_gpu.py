"""Against real NVML on a GPU machine: our readings agree with nvidia-smi (`pytest -m gpu`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pynvml
import pytest

from hydra_fleet.exporter.backends.nvml import NvmlBackend

QUERY = "index,uuid,memory.total,memory.used,temperature.gpu,power.draw"


def nvidia_smi() -> list[list[str]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi not found")
    out = subprocess.run(
        [smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [[cell.strip() for cell in line.split(",")] for line in out.strip().splitlines()]


@pytest.fixture(name="backend")
def fixture_backend() -> NvmlBackend:
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:
        pytest.skip(f"no NVML: {err}")
    backend = NvmlBackend(Path("/proc"))
    backend.start()
    return backend


@pytest.mark.gpu
def test_matches_nvidia_smi(backend: NvmlBackend) -> None:
    """Memory total/used, temperature and power agree with nvidia-smi within tolerance."""
    try:
        rows = nvidia_smi()
        samples = {s.uuid: s for s in backend.collect()}
    finally:
        backend.close()
    assert len(rows) == len(samples)
    mib = 1024**2
    for index, uuid, total, used, temp, power in rows:
        sample = samples[uuid]
        assert sample.up
        assert sample.index == index
        assert sample.memory_total_bytes is not None
        assert abs(sample.memory_total_bytes - int(total) * mib) <= mib
        assert sample.memory_used_bytes is not None
        assert abs(sample.memory_used_bytes - int(used) * mib) <= max(
            256 * mib, 0.05 * int(used) * mib
        )
        if temp not in ("[N/A]", "N/A"):
            assert abs(sample.temperature_celsius["gpu"] - float(temp)) <= 3
        if power not in ("[N/A]", "N/A"):
            assert sample.power_watts is not None
            assert abs(sample.power_watts - float(power)) <= max(20.0, 0.15 * float(power))
