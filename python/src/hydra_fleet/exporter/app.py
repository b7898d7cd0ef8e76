"""The HTTP side: /metrics, /healthz and /, with collection off the event loop.

A scrape starts one collection (each backend in a worker thread, with a deadline) and renders
it once; scrapes that arrive meanwhile wait for the same result, so fifty clients cause one
NVML pass. A backend still busy from an earlier scrape is not asked again: it is reported
with collector_success 0 and its devices down until it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from hydra_fleet.core.log import get_logger
from hydra_fleet.exporter import page
from hydra_fleet.exporter.backends.pyrsmi import fill_gaps
from hydra_fleet.exporter.collector import GpuCollector, render
from hydra_fleet.exporter.model import Backend, BackendResult, DeviceSample, Snapshot

log = get_logger("hydra.exporter")


@dataclass
class Exporter:
    backends: list[Backend]
    expected_devices: dict[str, int]
    collect_timeout: float = 5.0
    snapshot: Snapshot | None = None
    last: dict[str, BackendResult] = field(default_factory=dict)
    running: dict[str, Future[BackendResult]] = field(default_factory=dict)
    inflight: asyncio.Future[bytes] | None = None
    executor: ThreadPoolExecutor | None = None
    failing: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.collector = GpuCollector(lambda: self.snapshot)
        self.executor = ThreadPoolExecutor(
            max_workers=len(self.backends) + 2, thread_name_prefix="collect"
        )

    async def scrape(self) -> bytes:
        """The exposition text of a fresh collection, shared by concurrent callers."""
        if self.inflight is None:
            self.inflight = asyncio.ensure_future(self._collect_and_render())
            self.inflight.add_done_callback(self._clear)
        return await asyncio.shield(self.inflight)

    def _clear(self, _: asyncio.Future[bytes]) -> None:
        self.inflight = None

    async def _collect_and_render(self) -> bytes:
        assert self.executor is not None
        loop = asyncio.get_running_loop()
        waiting = {}
        for backend in self.backends:
            future = self.running.get(backend.name)
            if future is None or future.done():
                future = self.executor.submit(_timed, backend)
                self.running[backend.name] = future
            waiting[backend.name] = asyncio.wrap_future(future, loop=loop)
        if waiting:
            await asyncio.wait(waiting.values(), timeout=self.collect_timeout)
        results = [self._result(name, fut) for name, fut in waiting.items()]
        by_name = {r.backend: r for r in results}
        if "pyrsmi" in by_name and "amdgpu" in by_name:
            rsmi = by_name["pyrsmi"]
            rsmi.devices = fill_gaps(by_name["amdgpu"].devices, rsmi.devices)
        self.snapshot = Snapshot(results, self.expected_devices)
        return await loop.run_in_executor(self.executor, render, self.collector)

    def _result(self, name: str, fut: asyncio.Future[BackendResult]) -> BackendResult:
        if not fut.done():
            self._note_failure(name, f"still collecting after {self.collect_timeout:g} s")
            stale = self.last.get(name)
            devices = [_down(d) for d in stale.devices] if stale else []
            return BackendResult(name, False, self.collect_timeout, devices)
        if fut.cancelled():
            return BackendResult(name, False, 0.0)
        error = fut.exception()
        if error is not None:
            self._note_failure(name, f"{type(error).__name__}: {error}")
            return BackendResult(name, False, 0.0)
        result = fut.result()
        if name in self.failing:
            self.failing.discard(name)
            log.info("backend recovered", backend=name)
        self.last[name] = result
        return result

    def _note_failure(self, name: str, why: str) -> None:
        if name not in self.failing:
            self.failing.add(name)
            log.warning("backend collection failed", backend=name, error=why)

    def close(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception:
                log.exception("backend close failed", backend=backend.name)
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def _timed(backend: Backend) -> BackendResult:
    start = time.perf_counter()
    devices = backend.collect()
    return BackendResult(backend.name, True, time.perf_counter() - start, devices)


def _down(device: DeviceSample) -> DeviceSample:
    return DeviceSample(
        vendor=device.vendor,
        index=device.index,
        uuid=device.uuid,
        up=False,
        name=device.name,
        pci_bus_id=device.pci_bus_id,
        driver_version=device.driver_version,
        arch=device.arch,
    )


EXPORTER = web.AppKey("exporter", Exporter)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[EXPORTER].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def healthz(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    return web.json_response(
        {
            "status": "ok",
            "backends": {b.name: b.name not in exporter.failing for b in exporter.backends},
        }
    )


def make_app(exporter: Exporter) -> web.Application:
    app = web.Application()
    app[EXPORTER] = exporter

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        app[EXPORTER].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", page.index)
    return app
