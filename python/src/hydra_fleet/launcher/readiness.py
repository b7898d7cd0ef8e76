"""Readiness probes, one kind per engine family (see `engines.base.Probe`)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from hydra_fleet.launcher.engines.base import Probe


@dataclass(frozen=True)
class Result:
    ready: bool
    detail: str
    fatal: str | None = None  # will not get better by waiting (e.g. unknown Ollama model)
    cpu_fallback: bool = False
    loading: bool = False  # the engine says it is (re)loading a model: not dead


def _tagged(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


class Prober:
    """Answers "is the engine ready?" for one `Probe`; keeps state across calls (Ollama)."""

    def __init__(self, probe: Probe, timeout: float, gpus_pinned: bool) -> None:
        self.probe = probe
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.gpus_pinned = gpus_pinned
        self._session: aiohttp.ClientSession | None = None
        self._loads: dict[str, asyncio.Task[Result | None]] = {}

    async def close(self) -> None:
        for task in self._loads.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def check(self) -> Result:
        try:
            if self.probe.kind == "tcp":
                return await self._tcp()
            if self.probe.kind == "http":
                return await self._get_ok(self.probe.url)
            return await self._ollama()
        except (aiohttp.ClientError, OSError) as err:
            return Result(False, f"{type(err).__name__}: {err}".split("\n")[0][:160])
        except TimeoutError:
            return Result(False, "probe timed out")

    async def _tcp(self) -> Result:
        parts = urlsplit(self.probe.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 0
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout.total)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Result(True, f"port {port} accepts connections")

    async def _get_ok(self, url: str) -> Result:
        async with self._http().get(url) as response:
            body = (await response.text())[:120].strip()
            if response.status == 200:
                return Result(True, f"GET {urlsplit(url).path} 200")
            loading = response.status == 503 and "loading" in body.lower()
            return Result(
                False, f"GET {urlsplit(url).path} {response.status} {body}", loading=loading
            )

    async def _ollama(self) -> Result:
        base = self.probe.url.rstrip("/")
        async with self._http().get(base + "/") as response:
            text = await response.text()
            if response.status != 200 or "Ollama is running" not in text:
                return Result(False, f"GET / {response.status}")
        async with self._http().get(base + "/api/ps") as response:
            loaded = {
                _tagged(str(m.get("name", ""))): m
                for m in (await response.json()).get("models", [])
            }
        waiting = []
        for model in self.probe.models:
            entry = loaded.get(_tagged(model))
            if entry is not None:
                size, vram = int(entry.get("size", 0)), int(entry.get("size_vram", 0))
                if self.gpus_pinned and vram < size:
                    return Result(
                        True,
                        f"{model} loaded with {vram} of {size} bytes on the GPU",
                        cpu_fallback=True,
                    )
                continue
            task = self._loads.get(model)
            if task is None:
                self._loads[model] = asyncio.create_task(self._load(base, model))
            elif task.done():
                outcome = task.result()
                if outcome is not None and outcome.fatal:
                    return outcome
                del self._loads[model]  # failed or finished but not listed yet: ask again
            waiting.append(model)
        if waiting:
            return Result(False, f"loading {', '.join(waiting)}")
        return Result(True, "models loaded: " + ", ".join(self.probe.models))

    async def _load(self, base: str, model: str) -> Result | None:
        """POST /api/generate with no prompt loads the model and keeps it (keep_alive -1)."""
        session = self._http()
        try:
            async with session.post(
                base + "/api/generate",
                json={"model": model, "keep_alive": -1},
                timeout=aiohttp.ClientTimeout(total=None),
            ) as response:
                if response.status == 404:
                    return Result(
                        False,
                        f"model {model} not found",
                        fatal=f"Ollama has no model {model}: pull it first (ollama pull {model})",
                    )
                if response.status != 200:
                    return Result(False, f"load {model}: HTTP {response.status}")
        except aiohttp.ClientError as err:
            return Result(False, f"load {model}: {err}")
        return None
