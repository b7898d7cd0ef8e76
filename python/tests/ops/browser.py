"""Headless Chromium driven over the DevTools protocol: load a page, ask the rendered DOM.

Chromium is started the way CI runs it (Debian's `chromium`, no sandbox, no GPU, no network
beyond loopback, a throw-away profile); a test that needs it skips when it is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_argv(profile: Path, *args: str) -> list[str]:
    exe = chromium()
    assert exe is not None
    return [exe, *FLAGS, f"--user-data-dir={profile}", *args]


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 30)
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def open(self, url: str, width: int, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.events.clear()
        await self.call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(await asyncio.wait_for(self.ws.receive_json(), 30))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path


@asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    proc = await asyncio.create_subprocess_exec(
        *chromium_argv(profile, "--remote-debugging-port=0", "about:blank"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        endpoint = None
        seen: list[str] = []
        while endpoint is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            if not line:
                raise AssertionError("chromium exited before DevTools listened:\n" + "".join(seen))
            seen.append(line)
            found = re.search(r"DevTools listening on ws://([^/]+)/", line)
            endpoint = found.group(1) if found else None
        drain = asyncio.ensure_future(_drain(proc.stderr))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{endpoint}/json/list") as resp:
                targets = json.loads(await resp.text())
            (target,) = [t for t in targets if t["type"] == "page"][:1]
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def dump_dom(profile: Path, url: str) -> str:
    out = subprocess.run(
        chromium_argv(profile, "--dump-dom", url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def artifact_dir(default: Path) -> Path:
    """Where screenshots are kept: `$HYDRA_SCREENSHOT_DIR`, else under pytest's tmp dir."""
    return Path(os.environ.get("HYDRA_SCREENSHOT_DIR") or default)
