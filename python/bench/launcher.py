"""Launcher benchmarks.

1. `plan` on a 40 GB GGUF (a real header written by gguf.GGUFWriter, then the file extended
   sparsely): time, and how far into the file the parse reads (the header is memory-mapped,
   so that extent bounds what is read). Target: only the header, under 1 s.
2. The header of a real-sized vocabulary (Qwen: 152,064 tokens and 151,387 merges): CPU time
   of hydra's reader (the token arrays skipped by their lengths, never decoded) against the
   `gguf` library's GGUFReader. Target: under 100 ms. Before this reader skipped strings one
   read() at a time: 492 ms on the same file (2 busy cores).
3. Readiness lag: a stand-in llama-server (503 while loading, then 200) started as a real
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
from hydra_fleet.launcher.modelinfo import read_gguf
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
    parsed = read_gguf(model).header_bytes
    print(
        f"plan on a 40 GB sparse GGUF: {elapsed * 1000:.1f} ms (target 1 s: ratio {elapsed:.3f}); "
        f"the parse reads the first {parsed} bytes (the key/value section with a 128256-token "
        f"vocabulary and the tensor table; the written header is {header} bytes) = "
        f"{parsed / (40 * GB):.2e} of the file, through a memory map ({read} bytes by read())"
    )
    return elapsed < 1.0 and parsed <= header


def write_qwen_header(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(28)
    writer.add_context_length(32768)
    writer.add_embedding_length(3584)
    writer.add_head_count(28)
    writer.add_head_count_kv(4)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok_{i:06d}" for i in range(152_064)])
    writer.add_token_types([1] * 152_064)
    writer.add_token_merges([f"t{i} o{i}" for i in range(151_387)])
    writer.add_tensor("token_embd.weight", np.zeros((16, 16), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def bench_vocabulary(directory: Path) -> bool:
    model = directory / "qwen-152k.gguf"
    write_qwen_header(model)
    read_gguf(model)
    runs = 5
    start = time.process_time()
    for _ in range(runs):
        header = read_gguf(model)
    ours = (time.process_time() - start) / runs
    assert header.metadata["qwen2.block_count"] == 28
    start = time.process_time()
    gguf.GGUFReader(str(model))
    theirs = time.process_time() - start
    print(
        f"GGUF header with a 152,064-token vocabulary ({model.stat().st_size / 1e6:.1f} MB): "
        f"{ours * 1000:.1f} ms CPU (target 100 ms: ratio {ours / 0.1:.2f}); "
        f"gguf.GGUFReader {theirs * 1000:.0f} ms ({theirs / ours:.0f}x)"
    )
    return ours < 0.1


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
        ok = bench_vocabulary(Path(tmp)) and ok
        ok = asyncio.run(bench_ready(Path(tmp))) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
