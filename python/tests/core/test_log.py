"""Logging: one line per event, fields as key=value or JSON."""

from __future__ import annotations

import json
import logging

import pytest

from hydra_fleet.core.log import EventFormatter, get_logger


def record_for(event: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("hydra.test", logging.WARNING, __file__, 1, event, None, None)
    record.__dict__.update(fields)
    return record


def test_logfmt_quotes_values_with_spaces_and_keeps_one_line() -> None:
    """Values with spaces, quotes or newlines are quoted and escaped onto one line."""
    line = EventFormatter("logfmt", timestamps=False).format(
        record_for("check failed", check="ollama", error='timed out\nafter "5 s"')
    )
    assert line == (
        'level=warning logger=hydra.test event="check failed" check=ollama '
        'error="timed out\\nafter \\"5 s\\""'
    )


def test_json_format_is_one_object_per_line() -> None:
    """JSON output parses back to the same fields."""
    line = EventFormatter("json", timestamps=True).format(record_for("listening", port=9445))
    assert "\n" not in line
    data = json.loads(line)
    assert data["event"] == "listening"
    assert data["port"] == 9445
    assert data["ts"].endswith("Z")


def test_exception_traceback_stays_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """A logged exception keeps the event on a single line."""
    formatter = EventFormatter("logfmt", timestamps=False)
    log = get_logger("hydra.test")
    with caplog.at_level(logging.ERROR):
        try:
            raise RuntimeError("boom")  # noqa: TRY301
        except RuntimeError:
            log.exception("collection failed", backend="nvml")
    line = formatter.format(caplog.records[0])
    assert "\n" not in line
    assert "backend=nvml" in line
    assert "RuntimeError: boom" in line


def test_journald_lines_carry_their_syslog_priority() -> None:
    """Under journald each line starts with <N>, so `journalctl -p warning` can filter."""
    formatter = EventFormatter("logfmt", timestamps=False, priorities=True)
    lines = {}
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        record = record_for("e")
        record.levelno, record.levelname = level, logging.getLevelName(level)
        lines[level] = formatter.format(record)
    assert [line[:3] for line in lines.values()] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert lines[logging.INFO] == "<6>level=info logger=hydra.test event=e"


def test_setup_logging_uses_priorities_only_under_journald(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hydra_fleet.core.log import setup_logging  # noqa: PLC0415

    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    setup_logging()
    get_logger("hydra.test").warning("restart failed", unit="llm.service")
    monkeypatch.delenv("JOURNAL_STREAM")
    setup_logging()
    get_logger("hydra.test").warning("restart failed", unit="llm.service")
    first, second = capsys.readouterr().err.splitlines()
    assert first == '<4>level=warning logger=hydra.test event="restart failed" unit=llm.service'
    assert second.startswith("ts=")
