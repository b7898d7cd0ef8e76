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


class ConfigError(HydraError):
    """Configuration that is missing, unreadable or invalid."""

    exit_code = EX_CONFIG

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class TemporaryError(HydraError):
    """A condition that may clear on its own (a busy port, a GPU not yet visible)."""

    exit_code = EX_TEMPFAIL


class BindError(TemporaryError):
    """The listen address stayed in use for the whole retry window."""
