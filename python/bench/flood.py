"""Benchmark: scrape latency of the exporter and the agent under a connection flood.

Both services run as their installed commands under `ulimit -n 1024` (systemd's default);
each gets 1,100 idle and 200 slowloris connections. Target (issue 12): every scrape is
answered within 100 ms and the agent's check of the exporter never changes state.

    cd python && ../.venv/bin/python bench/flood.py [--idle 1100] [--slow 200] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.core.flood import flood, raise_own_nofile, scrape, services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1100)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    if not raise_own_nofile(2 * (args.idle + args.slow) + 200):
        print("the hard descriptor limit is too low for the flood", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, services(Path(tmp)) as svc:
        while svc.status()["checks"]["exporter"]["state"] != "up":
            time.sleep(0.2)
        baseline = {
            "exporter": scrape(f"http://127.0.0.1:{svc.exporter}/metrics", args.scrapes),
            "agent": scrape(f"http://127.0.0.1:{svc.agent}/metrics", args.scrapes),
        }
        started = time.monotonic()
        with flood([svc.exporter, svc.agent], args.idle, args.slow) as held:
            opened = time.monotonic() - started
            flooded = {
                "exporter": scrape(f"http://127.0.0.1:{svc.exporter}/metrics", args.scrapes),
                "agent": scrape(f"http://127.0.0.1:{svc.agent}/metrics", args.scrapes),
            }
            check = svc.status()["checks"]["exporter"]
            connections = len(held.idle) + len(held.slow)
    report = {
        "connections_opened": connections,
        "seconds_to_open": round(opened, 2),
        "baseline": baseline,
        "flooded": flooded,
        "check_state": check["state"],
        "check_consecutive_failures": check["consecutiveFailures"],
        "target_ms": 100,
        "ok": all(f["answered"] == f["asked"] and f["max_ms"] < 100 for f in flooded.values())
        and check["state"] == "up",
    }
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
