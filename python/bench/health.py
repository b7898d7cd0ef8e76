"""Benchmark: 1,000 HTTP checks on loopback every 10 s, 10% of them hanging.

Targets (issue 5): every cycle completes within the check deadline + 0.5 s, and the agent
process uses under 25% of one core. The loopback server runs in a separate process so only
the agent's CPU is measured. All checks start together (no start offset), the worst case.

    cd python && ../.venv/bin/python bench/health.py [--checks 1000] [--cycles 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from aiohttp import web

from hydra_fleet.health.agent import Agent
from hydra_fleet.health.checks import CheckResult
from hydra_fleet.health.config import load_config

INTERVAL = 10.0
DEADLINE = 2.0
CONNECT = 1.0
CPU_TARGET = 0.25
SLACK = 0.5


def serve(port: int) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(text="never")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/hang", hang)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench(checks: int, cycles: int, port: int, state: Path) -> dict[str, float]:
    hanging = checks // 10
    spec = {
        f"c{n:04d}": {
            "type": "http",
            "url": f"http://127.0.0.1:{port}/{'hang' if n < hanging else 'ok'}",
            "interval": INTERVAL,
            "timeout": DEADLINE,
            "connectTimeout": CONNECT,
        }
        for n in range(checks)
    }
    file = state / "bench.json"
    file.write_text(json.dumps({"stateDir": str(state), "checks": spec}))
    agent = Agent(load_config(file))
    done: dict[int, list[float]] = defaultdict(list)
    durations: list[float] = []
    original = agent.on_result
    start = 0.0

    async def on_result(name: str, result: CheckResult) -> None:
        now = time.monotonic()
        done[int((now - start) // INTERVAL)].append(now - start)
        durations.append(result.duration)
        await original(name, result)

    agent.on_result = on_result  # type: ignore[method-assign]
    start = time.monotonic()
    cpu0 = cpu_seconds()
    await agent.start(spread=False)
    await asyncio.sleep(cycles * INTERVAL - 0.05)
    cpu = cpu_seconds() - cpu0
    wall = time.monotonic() - start
    await agent.stop()
    completion = max(max(t) - k * INTERVAL for k, t in done.items() if k < cycles)
    counts = [len(done[k]) for k in range(cycles)]
    return {
        "completion": completion,
        "cpu_share": cpu / wall,
        "max_duration": max(durations),
        "results_per_cycle_min": float(min(counts)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(bench(args.checks, args.cycles, port, Path(tmp)))
    finally:
        server.kill()  # a graceful stop would wait for the hanging handlers
        server.join()
    target = DEADLINE + SLACK
    print(
        f"{args.checks} HTTP checks every {INTERVAL:g} s, {args.checks // 10} hanging, "
        f"deadline {DEADLINE:g} s, {args.cycles} cycles"
    )
    print(f"results per cycle (min): {figures['results_per_cycle_min']:.0f} of {args.checks}")
    print(
        f"cycle completion: {figures['completion']:.3f} s   target <= {target:g} s   "
        f"ratio {figures['completion'] / target:.2f}"
    )
    print(f"slowest single check: {figures['max_duration']:.3f} s")
    print(
        f"agent CPU: {figures['cpu_share'] * 100:.1f}% of one core   target < "
        f"{CPU_TARGET * 100:g}%   ratio {figures['cpu_share'] / CPU_TARGET:.2f}"
    )
    ok = (
        figures["completion"] <= target
        and figures["cpu_share"] < CPU_TARGET
        and figures["results_per_cycle_min"] == args.checks
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
