"""The command: bad input exits 78 with one clear line; a real process serves and stops."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from hydra_fleet.exporter.cli import main
from tests.exporter.conftest import promtool_check, synthetic_config, value
from tests.exporter.running import start_exporter, wait_http
from tests.net import free_port


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--backend", "cuda"], "unknown backend 'cuda'"),
        (["--backend", "synthetic,rocm"], "unknown backend 'rocm'"),
        (["--listen", "localhost"], "expected HOST:PORT"),
    ],
)
def test_bad_flags(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad command-line values exit 78 naming the problem."""
    assert main(argv) == 78
    assert expected in one_line_error(capsys)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"listenAdress": "0.0.0.0"}, "listenAdress"),
        ({"backends": ["nvml", "cuda"]}, "backends"),
        ({"backends": ["synthetic"]}, "synthetic.devices"),
        ({"port": 70000}, "port"),
        ({"sysfsRoot": "/nonexistent/sys"}, "sysfsRoot"),
        ({"synthetic": {"devices": [{"name": "x", "memoryByte": 1}]}}, "memoryByte"),
    ],
)
def test_bad_config(
    tmp_path: Path, config: dict[str, object], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config typo, a bad value or an unreadable sysfs path exits 78 naming file and field."""
    path = tmp_path / "exporter.json"
    path.write_text(json.dumps(config))
    assert main(["--config", str(path)]) == 78
    err = one_line_error(capsys)
    assert str(path) in err
    assert expected in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config file that does not exist is a configuration error."""
    assert main(["--config", str(tmp_path / "nope.json")]) == 78
    assert "nope.json" in one_line_error(capsys)


def test_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """A real process serves /metrics (valid exposition) and exits 0 on SIGTERM."""
    port = free_port()
    proc = start_exporter(synthetic_config(tmp_path), port, log=tmp_path / "log")
    try:
        text = wait_http(f"http://127.0.0.1:{port}/metrics", proc)
        promtool_check(text)
        assert value(text, "hydra_gpu_up", index="1") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_backend_flag_overrides_config(tmp_path: Path) -> None:
    """--backend replaces the config's list; auto without a GPU warns and keeps serving."""
    config = synthetic_config(tmp_path, sysfsRoot=str(tmp_path), procRoot=str(tmp_path))
    port = free_port()
    log = tmp_path / "log"
    proc = start_exporter(config, port, "--backend", "auto", log=log)
    try:
        text = wait_http(f"http://127.0.0.1:{port}/metrics", proc)
        assert "hydra_gpu_up{" not in text
        assert value(text, "hydra_gpu_expected_devices", vendor="synthetic") == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    output = log.read_text()
    assert "no GPU found" in output
    assert "--backend synthetic" in output


def test_port_in_use_is_retried(tmp_path: Path) -> None:
    """While the port is held the exporter retries; once freed it binds and serves."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    log = tmp_path / "log"
    proc = start_exporter(synthetic_config(tmp_path), port, log=log)
    try:
        deadline = time.monotonic() + 20
        while "address in use" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            assert proc.poll() is None
            time.sleep(0.05)
        holder.close()
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    finally:
        holder.close()
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_unreadable_sysfs_subprocess(tmp_path: Path) -> None:
    """The real command prints one line and exits 78 for a sysfsRoot it cannot read."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"backends": ["amdgpu"], "sysfsRoot": str(tmp_path / "missing")}))
    port = free_port()
    proc = start_exporter(config, port, log=tmp_path / "log")
    assert proc.wait(timeout=20) == 78
    output = (tmp_path / "log").read_text().strip()
    assert "sysfsRoot" in output
    assert "Traceback" not in output


def test_check_validates_without_hardware(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check (the build-time check): a valid config exits 0 even where its sysfs, proc and
    pci.ids paths do not exist (the Nix sandbox); a bad one exits 78 naming file and field."""
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "backends": ["amdgpu"],
                "sysfsRoot": "/nonexistent/sys",
                "procRoot": "/nonexistent/proc",
                "pciIdsFile": "/nonexistent/pci.ids",
                "expectedDevices": {"amd": 2},
            }
        )
    )
    assert main(["--config", str(good), "--check"]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backends": ["amdgpu"], "pciIdFile": "/x"}))
    assert main(["--config", str(bad), "--check"]) == 78
    err = one_line_error(capsys)
    assert str(bad) in err
    assert "pciIdFile" in err
