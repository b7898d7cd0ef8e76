"""The shipped Grafana dashboard against a real Prometheus scraping two synthetic hosts.

Host alpha is healthy; host beta has lost a GPU. Every panel's every expression (with
`$instance` = all) must return the series a person expects to see there, and the panels
that show a lost GPU must show it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.exporter.running import start_exporter, wait_http
from tests.net import free_port

DASHBOARD = Path(__file__).resolve().parents[3] / "monitoring" / "dashboards" / "gpu.json"
GIB = 1024**3

# Series the synthetic fleet has no reason to show: no XID was ever seen, and it imitates
# cards that remap rows rather than retire pages. Everything else must return data.
MAY_BE_EMPTY = {"hydra_gpu_xid_last_code", "hydra_gpu_retired_pages"}


def host_config(tmp_path: Path, host: str, *, lost: bool) -> Path:
    devices: list[dict[str, Any]] = [
        {
            "name": f"{host} 4090",
            "vendor": "nvidia",
            "memoryBytes": 24 * GIB,
            "processes": [
                {"pid": 4242, "comm": "tabbyAPI", "unit": "tabbyapi.service", "memoryBytes": GIB}
            ],
        },
        {"name": f"{host} mi50", "vendor": "amd", "memoryBytes": 32 * GIB, "lost": lost},
    ]
    path = tmp_path / f"{host}.json"
    path.write_text(
        json.dumps(
            {
                "backends": ["synthetic"],
                "expectedDevices": {"synthetic": 2},
                "synthetic": {"devices": devices},
            }
        )
    )
    return path


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    body = json.loads(wait_http(url))
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def panels() -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expression with $instance matching every host)."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["refId"], target["expr"].replace("$instance", ".*")


HOSTS: dict[str, str] = {}  # instance -> host, filled by the fixture


def host_of(series: dict[str, Any]) -> str:
    return HOSTS[series["metric"]["instance"]]


def by_host(result: list[dict[str, Any]]) -> dict[str, float]:
    return {host_of(r): float(r["value"][1]) for r in result}


@pytest.fixture(name="prometheus", scope="module")
def fixture_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed")
    if not DASHBOARD.exists():
        pytest.skip("monitoring/ is not part of this source tree")
    tmp = tmp_path_factory.mktemp("dashboard")
    ports = {"alpha": free_port(), "beta": free_port()}
    HOSTS.update({f"127.0.0.1:{port}": host for host, port in ports.items()})
    exporters = [
        start_exporter(host_config(tmp, host, lost=host == "beta"), port, log=tmp / f"{host}.log")
        for host, port in ports.items()
    ]
    targets = "".join(
        f"      - targets: ['127.0.0.1:{port}']\n        labels: {{host: {host}}}\n"
        for host, port in ports.items()
    )
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: hydra-gpu-exporter\n    static_configs:\n" + targets
    )
    prom_port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prom)
        deadline = time.monotonic() + 60
        # Enough scrapes of both hosts for rate() and increase() to have two samples.
        while len(query(prom_port, "count_over_time(hydra_gpu_up[1m]) >= 3")) < 4:
            assert time.monotonic() < deadline, (tmp / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        yield prom_port
    finally:
        prom.terminate()
        for exporter in exporters:
            exporter.terminate()
        prom.wait(timeout=20)
        for exporter in exporters:
            exporter.wait(timeout=10)


def test_every_expression_returns_data(prometheus: int) -> None:
    """No panel is blank on a fleet that has what it shows."""
    empty = []
    for title, ref, expr in panels():
        if not query(prometheus, expr) and not any(name in expr for name in MAY_BE_EMPTY):
            empty.append(f"{title} {ref}: {expr}")
    assert not empty, "\n".join(empty)


def expr_of(title: str, ref: str = "A") -> str:
    return next(e for t, r, e in panels() if t == title and r == ref)


def test_devices_down_shows_the_lost_gpu(prometheus: int) -> None:
    """0 on the healthy host, 1 on the one that lost a GPU (not a constant 0)."""
    assert by_host(query(prometheus, expr_of("Devices down"))) == {"alpha": 0.0, "beta": 1.0}


def test_up_against_expected(prometheus: int) -> None:
    assert by_host(query(prometheus, expr_of("GPUs up / expected", "A"))) == {
        "alpha": 2.0,
        "beta": 1.0,
    }
    assert by_host(query(prometheus, expr_of("GPUs up / expected", "B"))) == {
        "alpha": 2.0,
        "beta": 2.0,
    }


def test_legends_name_the_card(prometheus: int) -> None:
    """The hydra_gpu_info join adds the card's name to every device that answers."""
    result = query(prometheus, expr_of("Utilization"))
    assert sorted((host_of(r), r["metric"]["name"]) for r in result) == [
        ("alpha", "alpha 4090"),
        ("alpha", "alpha mi50"),
        ("beta", "beta 4090"),
    ]
    assert all(0 <= float(r["value"][1]) <= 1 for r in result)


def test_inventory_keeps_the_lost_card(prometheus: int) -> None:
    """The inventory lists every card the exporter knows, the lost one included."""
    rows = query(prometheus, expr_of("GPU inventory"))
    assert sorted(r["metric"]["name"] for r in rows) == [
        "alpha 4090",
        "alpha mi50",
        "beta 4090",
        "beta mi50",
    ]


def test_vram_by_unit(prometheus: int) -> None:
    result = query(prometheus, expr_of("VRAM by systemd unit"))
    assert {(host_of(r), r["metric"]["unit"]) for r in result} == {
        ("alpha", "tabbyapi.service"),
        ("beta", "tabbyapi.service"),
    }
    assert {float(r["value"][1]) for r in result} == {float(GIB)}


def test_tables_are_merged() -> None:
    """Table panels with several queries merge them into one row per device."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "table":
            ids = [t["id"] for t in panel.get("transformations", [])]
            if len(panel["targets"]) > 1:
                assert ids[:1] == ["merge"], panel["title"]
            assert "organize" in ids, panel["title"]
        if panel["type"] == "stat":
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps, panel["title"]
