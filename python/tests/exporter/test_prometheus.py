"""A real Prometheus scrapes the exporter and the series come back through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.exporter.conftest import synthetic_config
from tests.exporter.running import start_exporter, wait_http
from tests.net import free_port


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(wait_http(url))
    assert body["status"] == "success"
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_exporter(tmp_path: Path) -> None:
    """Prometheus ingests the exposition: up per device, expected devices, process VRAM by unit."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not installed")
    exporter_port, prom_port = free_port(), free_port()
    exporter = start_exporter(
        synthetic_config(tmp_path), exporter_port, log=tmp_path / "exporter.log"
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: gpu\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prom)
        deadline = time.monotonic() + 40
        while not (up := query(prom_port, "hydra_gpu_up")):
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        by_index = {r["metric"]["index"]: r["value"][1] for r in up}  # type: ignore[index]
        assert by_index == {"0": "1", "1": "0"}
        (target,) = query(prom_port, 'up{job="gpu"}')
        assert target["value"][1] == "1"  # type: ignore[index]
        (procs,) = query(prom_port, 'hydra_gpu_process_memory_bytes{unit="ollama.service"}')
        assert procs["metric"]["comm"] == "ollama"  # type: ignore[index]
        # What the GPU-missing alert evaluates: fewer devices up than expected.
        (missing,) = query(
            prom_port,
            "count by (vendor) (hydra_gpu_up == 1) < on (vendor) hydra_gpu_expected_devices",
        )
        assert missing["metric"]["vendor"] == "synthetic"  # type: ignore[index]
    finally:
        prom.terminate()
        exporter.terminate()
        prom.wait(timeout=20)
        exporter.wait(timeout=10)
