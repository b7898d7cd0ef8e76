"""The exit codes of `hydra-deploy`, one per outcome (documented in `--help` and README)."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    DEPLOYED = 0  # the new system passed its gate; it runs and is the boot default
    GATE_FAILED = 2  # the gate failed; the recorded system runs again, boot default unchanged
    ACTIVATION_FAILED = 3  # activation (or the bootloader install) failed; rolled back
    ROLLBACK_FAILED = 4  # re-activating the recorded system failed: the host needs a person
    BUILD_FAILED = 5  # evaluation or build failed; nothing on the host changed
    BUSY = 6  # another deploy holds the host's lock; nothing changed
    NOT_STARTED = 7  # copy, or starting the deploy on the host, failed; nothing changed
    LOST = 8  # contact with the host lost: it commits or rolls back by itself
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: this side stopped following; the host goes on
    USAGE = 64
    CONFIG = 78


EXIT_HELP = """\b
Exit codes:
  0   deployed: the new system passed its gate, runs, and is the boot default
  2   the gate failed; the recorded system was re-activated, boot default unchanged
  3   activation or the bootloader install failed; the recorded system was re-activated
  4   re-activating the recorded system failed: the host needs a person
  5   the build failed; nothing on the host changed
  6   another deploy holds the host (the message names it); nothing changed
  7   copying the closure or starting the deploy on the host failed; nothing changed
  8   outcome unknown: the host could not be reached again (it decides by itself),
      or its deploy ended without a result (see its journal)
  130 interrupted (Ctrl-C, SIGTERM): only the following stopped; the host goes on
  64  usage error; 78 configuration error"""
