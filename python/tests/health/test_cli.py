"""`hydra-health check`, `gate`, `alerts` and bad input, through `main()`."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.health.cli import main
from hydra_fleet.health.store import Store


class Handler(http.server.BaseHTTPRequestHandler):
    flips: dict[str, int] = {}  # noqa: RUF012 - shared by the test server's handlers

    def do_GET(self) -> None:
        if self.path == "/ok":
            code = 200
        elif self.path == "/slow-start":  # fails twice, then passes
            n = self.flips.get(self.path, 0)
            self.flips[self.path] = n + 1
            code = 200 if n >= 2 else 503
        else:
            code = 500
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def server() -> Iterator[str]:
    Handler.flips = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def write(tmp_path: Path, checks: dict[str, Any], **extra: Any) -> Path:
    file = tmp_path / "health.json"
    file.write_text(json.dumps({"stateDir": str(tmp_path / "state"), "checks": checks, **extra}))
    return file


def http_check(url: str) -> dict[str, Any]:
    return {"type": "http", "url": url, "interval": 0.2, "timeout": 0.2, "connectTimeout": 0.2}


def test_check_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server() as base:
        good = write(tmp_path, {"a": http_check(f"{base}/ok")})
        assert main(["check", "--config", str(good), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is True
        assert report["checks"]["a"]["detail"] == "HTTP 200"
        bad = write(tmp_path, {"a": http_check(f"{base}/ok"), "b": http_check(f"{base}/boom")})
        assert main(["check", "--config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "PASS  a  HTTP 200" in out
    assert "FAIL  b  HTTP 500" in out


def test_gate_waits_for_passes_in_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with server() as base:
        cfg = write(
            tmp_path, {"a": http_check(f"{base}/ok"), "s": http_check(f"{base}/slow-start")}
        )
        code = main(["gate", "--config", str(cfg), "--timeout", "10", "--passes", "2", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "passed": ["a", "s"], "failed": {}}


def test_gate_times_out_naming_the_failed_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with server() as base:
        cfg = write(tmp_path, {"a": http_check(f"{base}/ok"), "b": http_check(f"{base}/boom")})
        assert main(["gate", "--config", str(cfg), "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "gate failed" in err
    assert "b: HTTP 500 (0/3 passes in a row)" in err
    assert "  a:" not in err


def test_gate_allow_missing_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "--config", "/nonexistent/h.json", "--allow-missing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_bad_config_is_one_line_and_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path, {"a": {"type": "http", "url": "http://x", "intervall": 5}})
    assert main(["check", "--config", str(cfg)]) == 78
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "checks.a.intervall" in err
    assert 'did you mean "interval"' in err
    cfg = write(tmp_path, {"a": {"type": "http", "url": "http://x", "timeout": 30}})
    assert main(["check", "--config", str(cfg)]) == 78
    assert "checks.a.timeout: expected a value no larger than interval" in capsys.readouterr().err
    cfg = write(
        tmp_path,
        {
            "a": {"type": "tcp", "host": "h", "port": 1, "dependsOn": ["b"]},
            "b": {"type": "tcp", "host": "h", "port": 1, "dependsOn": ["a"]},
        },
    )
    assert main(["check", "--config", str(cfg)]) == 78
    assert "dependsOn forms a cycle" in capsys.readouterr().err


def test_alerts_list_and_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, {})
    store = Store(tmp_path / "state" / "health.sqlite3")
    alert = store.enqueue(
        dedup_key="k",
        fingerprint="f",
        status="firing",
        labels={"alertname": "HydraCheckDown", "check": "llm"},
        annotations={},
        starts_at=1.0,
        ends_at=None,
        now=1.0,
        sinks=["webhook"],
    )
    assert alert is not None
    store.mark_failed(alert, "webhook", 9e12, "HTTP 503")
    store.close()
    assert main(["alerts", "--config", str(cfg), "list"]) == 0
    out = capsys.readouterr().out
    assert "HydraCheckDown llm  -> webhook: pending (1 tries)  last error: HTTP 503" in out
    assert main(["alerts", "--config", str(cfg), "retry"]) == 0
    assert "1 deliveries due now" in capsys.readouterr().out
    assert main(["alerts", "--config", str(cfg), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["nextTry"] == 0


def test_unusable_state_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = write(tmp_path, {})
    code = main(["alerts", "--config", str(cfg), "--state-dir", str(blocker / "state"), "list"])
    assert code == 78
    err = capsys.readouterr().err.strip()
    assert err.startswith("hydra-health: cannot open the state database")
    assert "\n" not in err


def test_static_check_validates_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --static` (the build-time check): a command that would fail the live run is
    never run; a config error is still 78 with one line."""
    marker = tmp_path / "ran"
    cfg = write(tmp_path, {"c": {"type": "command", "command": ["touch", str(marker)]}})
    assert main(["check", "--static", "--config", str(cfg)]) == 0
    assert not marker.exists()
    assert "ok, 1 checks" in capsys.readouterr().out
    # at build time the secrets do not exist yet: --static does not read them
    ntfy = {"url": "http://127.0.0.1:9", "topic": "t", "tokenFile": "/run/secrets/ntfy"}
    with_secret = write(tmp_path, {}, alerts={"sinks": {"ntfy": ntfy}})
    assert main(["check", "--static", "--config", str(with_secret)]) == 0
    capsys.readouterr()
    bad = write(tmp_path, {"c": {"type": "tcp", "host": "nas..lan", "port": 80}})
    assert main(["check", "--static", "--config", str(bad)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "checks.c.host" in err[0]
    assert "(an empty label)" in err[0]
