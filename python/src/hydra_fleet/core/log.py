"""One line per event, as logfmt (key=value) or JSON, on stderr where journald collects it.

Under journald (`$JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` for
an error, `<4>` a warning, `<6>` info, `<7>` debug), which journald strips and stores, so
`journalctl -p warning` shows exactly the warnings and worse.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Literal

LogFormat = Literal["logfmt", "json"]
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class EventFormatter(logging.Formatter):
    """Formats a record as `level=… logger=… event=… key=value…` or as one JSON object."""

    def __init__(
        self, fmt: LogFormat = "logfmt", *, timestamps: bool = True, priorities: bool = False
    ) -> None:
        super().__init__()
        self.fmt = fmt
        self.timestamps = timestamps
        self.priorities = priorities

    def format(self, record: logging.LogRecord) -> str:
        line = self._format(record)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.priorities else line

    def _format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if self.timestamps:
            fields["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
                f".{int(record.msecs):03d}Z"
            )
        fields["level"] = record.levelname.lower()
        fields["logger"] = record.name
        fields["event"] = record.getMessage()
        fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        if self.fmt == "json":
            return json.dumps(fields, default=str)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class EventLogger:
    """A logger taking an event name and fields: `log.info("listening", port=9445)`."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, fields: dict[str, object], *, exc: bool) -> None:
        if self._logger.isEnabledFor(level):
            clean = {k: v for k, v in fields.items() if k not in _RESERVED}
            self._logger.log(level, event, extra=clean, exc_info=exc, stacklevel=3)

    def log(self, level: int, event: str, **fields: object) -> None:
        self._log(level, event, fields, exc=False)

    def debug(self, event: str, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields, exc=False)

    def info(self, event: str, **fields: object) -> None:
        self._log(logging.INFO, event, fields, exc=False)

    def warning(self, event: str, **fields: object) -> None:
        self._log(logging.WARNING, event, fields, exc=False)

    def error(self, event: str, **fields: object) -> None:
        self._log(logging.ERROR, event, fields, exc=False)

    def exception(self, event: str, **fields: object) -> None:
        """Log at error level with the current exception's traceback (escaped onto one line)."""
        self._log(logging.ERROR, event, fields, exc=True)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def setup_logging(level: str = "info", fmt: LogFormat | None = None) -> None:
    """Send every logger to stderr, one line per event.

    The format defaults to `$HYDRA_LOG_FORMAT` or logfmt. Under journald (`$JOURNAL_STREAM`
    set) timestamps are left out, since journald stamps every line itself, and each line
    carries its syslog priority prefix.
    """
    chosen = fmt or os.environ.get("HYDRA_LOG_FORMAT", "logfmt")
    journald = "JOURNAL_STREAM" in os.environ
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        EventFormatter(
            "json" if chosen == "json" else "logfmt", timestamps=not journald, priorities=journald
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs every request at info; a scrape every few seconds would drown the journal.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
