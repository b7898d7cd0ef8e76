"""Launcher benchmarks.

1. `plan` on a 40 GB GGUF (a real header written by gguf.GGUFWriter, then the file extended
   sparsely): time, and bytes read (the /proc/self/io rchar delta). Target: only the header,
   under 1 MiB read, under 1 s.
2. Readiness lag: a stand-in llama-server (503 while loading, then 200) started as a real
   subprocess; the time from its becoming ready to READY=1 on a real NOTIFY_SOCKET. Target 0.5 s.

Run: cd python && ../.venv/bin/python bench/launcher.py
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from hydra_fleet.core.config import load
from hydra_fleet.core.sdnotify import Notifier
from hydra_fleet.launcher import preflight, supervisor
from hydra_fleet.launcher.config import Instance
from hydra_fleet.launcher.engines import launch_spec
from hydra_fleet.launcher.plan import as_text

GB = 10**9
STAND_IN = Path(__file__).parents[1] / "tests" / "launcher" / "stand_in.py"


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def write_sparse_gguf(path: Path, size: int) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(80)
    writer.add_context_length(131072)
    writer.add_embedding_length(8192)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(128_256)])
    for layer in range(80):
        writer.add_tensor_info(
            f"blk.{layer}.attn_q.weight", (8192, 8192), np.dtype(np.float16), 8192 * 8192 * 2
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as handle:
        handle.truncate(size)


def bench_plan(directory: Path) -> bool:
    model = directory / "llama-70b.gguf"
    write_sparse_gguf(model, 40 * GB)
    header = model.stat().st_blocks * 512
    config = directory / "plan.json"
    gpu = {"vendor": "nvidia", "model": "H100", "vramGiB": 80, "arch": "sm_90", "index": 0}
    config.write_text(
        json.dumps(
            {
                "engine": "llama-cpp",
                "port": 8080,
                "model": str(model),
                "contextLength": 8192,
                "gpus": [gpu],
            }
        )
    )
    before, start = rchar(), time.perf_counter()
    instance = load(Instance, config)
    pre = preflight.run(instance, None)
    text = as_text(pre, launch_spec(instance, pre.fit, {}))
    elapsed, read = time.perf_counter() - start, rchar() - before
    assert "80 layers, 8 KV heads, head dim 128" in text, text
    print(
        f"plan on a 40 GB sparse GGUF: {elapsed * 1000:.1f} ms (target 1 s: ratio {elapsed:.3f}); "
        f"{read} bytes read = {read / (40 * GB):.2e} of the file; the written header (key/value "
        f"section with a 128256-token vocabulary, tensor infos) is {header} bytes: ratio "
        f"{read / header:.2f} (target <= 1.0 + the config and 64 KiB read buffer)"
    )
    return read <= header + 128 * 1024 and elapsed < 1.0


async def bench_ready(directory: Path) -> bool:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notify_path = directory / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    marker = directory / "ready-at"
    cmd = [sys.executable, str(STAND_IN), "llama-cpp", str(port), "3", str(marker)]
    config = directory / "ready.json"
    config.write_text(
        json.dumps({"engine": "command", "port": port, "probePath": "/health", "command": cmd})
    )
    instance = load(Instance, config)
    sup = supervisor.Supervisor(instance, None, Notifier(str(notify_path)), dict(os.environ))
    task = asyncio.create_task(sup.run())
    loop = asyncio.get_running_loop()
    ready_at = None
    while ready_at is None:
        data = await loop.sock_recv(notify, 4096)
        if b"READY=1" in data:
            ready_at = time.time()
    sup.stop.set()
    await task
    notify.close()
    lag = ready_at - float(marker.read_text())
    print(
        f"readiness lag: {lag * 1000:.0f} ms from the engine ready to READY=1 "
        f"(target 500 ms: ratio {lag / 0.5:.2f})"
    )
    return lag < 0.5


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ok = bench_plan(Path(tmp))
        ok = asyncio.run(bench_ready(Path(tmp))) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
