"""Exit codes (sysexits.h) and the exception classes that map onto them."""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_TEMPFAIL = 75  # may clear by itself: systemd's Restart= should try again
EX_CONFIG = 78  # will not clear until the operator changes the configuration


class HydraError(Exception):
    """An error the operator can act on; its message is shown without a traceback."""

    exit_code = EX_FAILURE


def shorten(text: str, limit: int = 200) -> str:
    """`text` cut to about `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class ConfigError(HydraError):
    """Configuration that is missing, unreadable or invalid.

    The message is one line, whatever the value: the field and the problem (which may
    echo the value) are cut short and line breaks escaped.
    """

    exit_code = EX_CONFIG

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = _one_line(shorten(source, 300))
        self.field = _one_line(shorten(field, 200))
        self.problem = _one_line(shorten(problem, 400))
        field, problem = self.field, self.problem
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {problem}")


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0")


class ListenAddressError(HydraError):
    """The listen address can never be bound (no such address here, not resolvable, not
    permitted): restarting will not help, the configuration must change."""

    exit_code = EX_CONFIG


class TemporaryError(HydraError):
    """A condition that may clear on its own (a busy port, a GPU not yet visible)."""

    exit_code = EX_TEMPFAIL


class BindError(TemporaryError):
    """The listen address stayed in use for the whole retry window."""
