"""Real aiohttp scrapes of the exporter app."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from hydra_fleet.exporter.app import Exporter, make_app
from hydra_fleet.exporter.backends.amdgpu import AmdgpuBackend
from hydra_fleet.exporter.backends.pyrsmi import PyrsmiBackend
from hydra_fleet.exporter.backends.synthetic import SyntheticBackend
from hydra_fleet.exporter.config import SyntheticDevice, SyntheticProcess
from hydra_fleet.exporter.model import DeviceSample
from tests.exporter.conftest import promtool_check, series, value
from tests.exporter.kernel_trees import MI50_FILES, MI50_HWMON, Card, make_proc, make_sysfs

DEVICES = [
    SyntheticDevice(
        "demo 4090",
        24 * 1024**3,
        vendor="nvidia",
        processes=[SyntheticProcess(4242, "ollama", 1024**3, "ollama.service")],
    ),
    SyntheticDevice("demo lost", 8 * 1024**3, lost=True),
]


class Broken:
    name = "nvml"

    def collect(self) -> list[DeviceSample]:
        raise RuntimeError("NVML is not available")

    def close(self) -> None:
        pass


class Slow:
    """Counts collections; each takes `delay` seconds."""

    def __init__(self, delay: float, name: str = "amdgpu") -> None:
        self.name = name
        self.delay = delay
        self.calls = 0
        self.release = threading.Event()

    def collect(self) -> list[DeviceSample]:
        self.calls += 1
        self.release.wait(self.delay)
        return [DeviceSample("amd", "0", "slow-0", memory_total_bytes=1.0)]

    def close(self) -> None:
        self.release.set()


async def test_metrics_exposition(aiohttp_client: AiohttpClient) -> None:
    """Every contract metric is served with vendor/index/uuid; a lost device is up 0."""
    exporter = Exporter([SyntheticBackend(DEVICES)], {"synthetic": 3})
    client = await aiohttp_client(make_app(exporter))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    promtool_check(text)
    assert value(text, "hydra_gpu_up", vendor="synthetic", index="0") == 1
    assert value(text, "hydra_gpu_up", vendor="synthetic", index="1") == 0
    assert value(text, "hydra_gpu_expected_devices", vendor="synthetic") == 3
    assert value(text, "hydra_gpu_memory_total_bytes", index="0") == 24 * 1024**3
    assert value(text, "hydra_gpu_exporter_collector_success", backend="synthetic") == 1
    assert (
        value(text, "hydra_gpu_process_memory_bytes", pid="4242", unit="ollama.service") == 1024**3
    )
    info = series(text, "hydra_gpu_info")
    assert {i["name"] for i in info} == {"demo 4090", "demo lost"}
    # Identity only on info; the lost device has no readings at all (omitted, never 0).
    for name in (
        "hydra_gpu_memory_used_bytes",
        "hydra_gpu_temperature_celsius",
        "hydra_gpu_power_watts",
    ):
        labels = series(text, name)
        assert labels, name
        assert all({"vendor", "index", "uuid"} <= set(s) and "name" not in s for s in labels)
        assert all(s["index"] == "0" for s in labels), name
    assert series(text, "hydra_gpu_exporter_build_info")


async def test_failing_backend_does_not_fail_the_scrape(aiohttp_client: AiohttpClient) -> None:
    """A backend that raises gets collector_success 0; the others are served."""
    exporter = Exporter([Broken(), SyntheticBackend(DEVICES)], {"nvidia": 2})
    client = await aiohttp_client(make_app(exporter))
    text = await (await client.get("/metrics")).text()
    assert value(text, "hydra_gpu_exporter_collector_success", backend="nvml") == 0
    assert value(text, "hydra_gpu_exporter_collector_success", backend="synthetic") == 1
    assert value(text, "hydra_gpu_up", index="0") == 1
    health = await (await client.get("/healthz")).json()
    assert health == {"status": "ok", "backends": {"nvml": False, "synthetic": True}}


async def test_concurrent_scrapes_share_one_collection(aiohttp_client: AiohttpClient) -> None:
    """Twenty simultaneous scrapes cause one collection, off the event loop."""
    slow = Slow(0.3)
    exporter = Exporter([slow], {})
    client = await aiohttp_client(make_app(exporter))
    started = time.monotonic()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while time.monotonic() - started < 0.25:
            ticks += 1
            await asyncio.sleep(0.01)

    responses = await asyncio.gather(ticker(), *(client.get("/metrics") for _ in range(20)))
    assert all(r is not None and r.status == 200 for r in responses[1:])
    assert slow.calls == 1
    assert ticks > 5, "the event loop was blocked during collection"
    await client.get("/metrics")
    assert slow.calls == 2


async def test_hung_backend_misses_its_deadline(aiohttp_client: AiohttpClient) -> None:
    """A backend stuck past collectTimeout is reported failed and down, and not called again."""
    slow = Slow(0.05)
    exporter = Exporter([slow, SyntheticBackend(DEVICES)], {}, collect_timeout=0.2)
    client = await aiohttp_client(make_app(exporter))
    text = await (await client.get("/metrics")).text()
    assert value(text, "hydra_gpu_up", uuid="slow-0") == 1
    slow.delay = 30.0  # now it hangs, as a wedged driver call would
    started = time.monotonic()
    text = await (await client.get("/metrics")).text()
    assert time.monotonic() - started < 5
    assert value(text, "hydra_gpu_exporter_collector_success", backend="amdgpu") == 0
    assert value(text, "hydra_gpu_up", uuid="slow-0") == 0
    assert value(text, "hydra_gpu_exporter_collector_success", backend="synthetic") == 1
    text = await (await client.get("/metrics")).text()
    assert slow.calls == 2  # the hung call is waited for, not stacked
    slow.release.set()


async def test_pyrsmi_without_library(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    """With no ROCm library, pyrsmi reports collector_success 0 and amdgpu is served."""
    sysfs = make_sysfs(
        tmp_path / "sys", [Card(1, "0000:03:00.0", files=MI50_FILES, hwmon=MI50_HWMON)]
    )
    proc = make_proc(tmp_path / "proc", [])
    exporter = Exporter([AmdgpuBackend(sysfs, proc), PyrsmiBackend()], {"amd": 1})
    client = await aiohttp_client(make_app(exporter))
    text = await (await client.get("/metrics")).text()
    assert value(text, "hydra_gpu_exporter_collector_success", backend="pyrsmi") == 0
    assert value(text, "hydra_gpu_exporter_collector_success", backend="amdgpu") == 1
    assert value(text, "hydra_gpu_up", vendor="amd") == 1
    promtool_check(text)


async def test_index_page(aiohttp_client: AiohttpClient) -> None:
    """/ names the backends and links to /metrics."""
    client = await aiohttp_client(make_app(Exporter([SyntheticBackend(DEVICES)], {})))
    page = await (await client.get("/")).text()
    assert 'href="/metrics"' in page
    assert "synthetic" in page
