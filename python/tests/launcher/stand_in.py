"""Stand-in inference engines, run as real subprocesses: each mimics one engine's start.

    python stand_in.py MODE PORT DELAY [MARKER]

llama-cpp: listens at once, /health 503 "Loading model" for DELAY seconds, then 200.
tabbyapi, vllm: the port opens only after DELAY seconds, then /health 200.
ollama: / answers at once; POST /api/generate loads the model in DELAY seconds; /api/ps lists it.
ollama-cpu: like ollama, but /api/ps shows the model held in system memory (size_vram 0).
degrade: like llama-cpp, then /health answers 500 from 2 x DELAY seconds on (a hung engine).
reload: like llama-cpp, then /health 503 "Loading model" again from 2 x DELAY to 6 x DELAY
seconds (a model reloading after ready), then 200 again.
ollama-busy: like ollama, but once /api/ps has listed the loaded model it never answers again
(a reload holding Ollama's scheduler lock).
crash: listens, exits 3 after DELAY seconds. ignore-term: like llama-cpp but ignores SIGTERM.
MARKER: a file where the stand-in writes the time.time() at which it became ready.
Also writes `<MARKER>.env` with its NOTIFY_SOCKET and CUDA_VISIBLE_DEVICES, and spawns a
grandchild (`sleep`) in the same process group so group stops can be observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web


def mark(marker: Path | None) -> None:
    if marker is not None:
        marker.write_text(repr(time.time()))


def setup(marker: Path | None) -> None:
    if marker is not None:
        keys = ("NOTIFY_SOCKET", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
        env = {k: os.environ.get(k) for k in keys}
        Path(f"{marker}.env").write_text(json.dumps(env))
        child = subprocess.Popen(["sleep", "300"])
        Path(f"{marker}.grandchild").write_text(str(child.pid))


async def main(mode: str, port: int, delay: float, marker: Path | None) -> None:
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    started = time.monotonic()
    loaded: set[str] = set()
    listed: list[bool] = []

    def ready() -> bool:
        return time.monotonic() - started >= delay

    async def health(_: web.Request) -> web.Response:
        if mode == "degrade" and time.monotonic() - started >= 2 * delay:
            return web.json_response({"error": "hung"}, status=500)
        if mode == "reload" and 2 * delay <= time.monotonic() - started < 6 * delay:
            return web.json_response(
                {"error": {"code": 503, "message": "Loading model"}}, status=503
            )
        if mode in ("llama-cpp", "ignore-term", "degrade", "reload") and not ready():
            return web.json_response(
                {"error": {"code": 503, "message": "Loading model"}}, status=503
            )
        return web.json_response({"status": "ok"})

    async def root(_: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] == "missing":
            return web.json_response({"error": "model not found"}, status=404)
        await asyncio.sleep(delay)
        loaded.add(body["model"] if ":" in body["model"] else body["model"] + ":latest")
        mark(marker)
        return web.json_response({"done": True})

    async def ps(_: web.Request) -> web.Response:
        if mode == "ollama-busy" and listed:
            await asyncio.Event().wait()
        if loaded:
            listed.append(True)
        vram = 0 if mode == "ollama-cpu" else 100
        models = [{"name": m, "size": 100, "size_vram": vram} for m in sorted(loaded)]
        return web.json_response({"models": models})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/", root)
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/ps", ps)
    runner = web.AppRunner(app)
    await runner.setup()
    if mode in ("tabbyapi", "vllm"):
        await asyncio.sleep(delay)
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    if mode in ("tabbyapi", "vllm"):
        mark(marker)
    elif mode in ("llama-cpp", "ignore-term", "degrade", "reload"):
        await asyncio.sleep(max(delay - (time.monotonic() - started), 0))
        mark(marker)
    if mode == "crash":
        await asyncio.sleep(delay)
        os._exit(3)
    await asyncio.Event().wait()


if __name__ == "__main__":
    marker_arg = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    setup(marker_arg)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), marker_arg))
