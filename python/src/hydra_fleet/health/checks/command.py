"""`command`: run an argv; exit status 0 passes. The whole process group dies at the deadline."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from typing import TYPE_CHECKING

from hydra_fleet.health.config import CheckConfig

if TYPE_CHECKING:
    from hydra_fleet.health.checks import CheckContext

MAX_OUTPUT = 512


async def run_argv(argv: list[str], deadline: float) -> tuple[int | None, str]:
    """Run `argv` in its own session; return (exit status or None on timeout, output tail)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # the agent's trouble, not the command's: an inconclusive check
        return 127, f"cannot run {argv[0]}: {err.strerror}"
    try:
        async with asyncio.timeout(deadline):
            output, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(proc.wait())
        raise
    text = output.decode("utf-8", "replace").strip()[-MAX_OUTPUT:]
    return proc.returncode, text


def kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def probe(check: CheckConfig, ctx: CheckContext) -> tuple[bool, str]:
    code, output = await run_argv(check.command, check.timeout)
    detail = f"exit {code}" + (f": {output.splitlines()[-1]}" if output else "")
    return code == 0, detail
