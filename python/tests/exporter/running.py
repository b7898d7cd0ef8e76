"""Start the exporter as a real subprocess for end-to-end tests and the benchmark."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LAUNCH = "from hydra_fleet.exporter.cli import main; raise SystemExit(main())"


def start_exporter(config: Path, port: int, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URL
                return str(response.read().decode())
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
