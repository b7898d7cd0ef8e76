"""Check kinds. Every check runs under a hard deadline: `run_check` never takes longer than
the check's `timeout` (plus scheduling noise), whatever the peer does.

A check that raises anything is a failed check whose detail is the exception. A check that
failed because the agent itself ran out of descriptors (or memory) says nothing about the
service: its result is `inconclusive`, and the agent neither counts it nor acts on it."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp

from hydra_fleet.health.config import CheckConfig

# the agent's own resources, not the service's health
_AGENT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    duration: float
    inconclusive: bool = False  # the agent could not run the check (out of descriptors)


def _agent_errno(err: BaseException) -> int | None:
    """The errno when `err` (or what caused it) is the agent running out of resources."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            break
        code = getattr(seen, "errno", None)
        os_error = getattr(seen, "os_error", None)
        if code is None and isinstance(os_error, OSError):
            code = os_error.errno
        if code in _AGENT_ERRNOS:
            return int(code)
        seen = seen.__cause__ or seen.__context__
    return None


@dataclasses.dataclass
class CheckContext:
    """What checks share: one HTTP session (no connection limit, so 1,000 checks run at once)."""

    session: aiohttp.ClientSession
    systemctl: str = "systemctl"

    @classmethod
    def create(cls, systemctl: str = "systemctl") -> CheckContext:
        _runners()
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        return cls(aiohttp.ClientSession(connector=connector), systemctl)

    async def close(self) -> None:
        await self.session.close()


Probe = Callable[[CheckConfig, "CheckContext"], Awaitable[tuple[bool, str]]]


@functools.cache
def _runners() -> dict[str, Probe]:
    """The probe of each check type, imported once: at start (`CheckContext.create`), so a
    process out of descriptors later still has them."""
    from hydra_fleet.health.checks import command, gpu, http, systemd, tcp  # noqa: PLC0415

    return {
        "http": http.probe,
        "tcp": tcp.probe,
        "systemd": systemd.probe,
        "gpu": gpu.probe,
        "command": command.probe,
    }


async def run_check(check: CheckConfig, ctx: CheckContext) -> CheckResult:
    runners = _runners()
    started = time.monotonic()
    try:
        async with asyncio.timeout(check.timeout):
            ok, detail = await runners[check.type](check, ctx)
    except Exception as err:  # noqa: BLE001 - any exception is a failed (or inconclusive) check
        return _failed(err, check, time.monotonic() - started)
    return CheckResult(ok, detail, time.monotonic() - started)


def _failed(err: Exception, check: CheckConfig, took: float) -> CheckResult:
    code = _agent_errno(err)
    if code is not None:
        return CheckResult(False, f"agent: {os.strerror(code)}", took, inconclusive=True)
    if isinstance(err, TimeoutError):
        return CheckResult(False, f"no answer within the {check.timeout:g} s deadline", took)
    if isinstance(err, aiohttp.ClientConnectorError):
        code = err.os_error.errno
        reason = os.strerror(code) if code else str(err.os_error)
        return CheckResult(False, f"cannot connect to {err.host}:{err.port}: {reason}", took)
    # anything else, e.g. UnicodeError for a host `nas..lan`: the exception is the detail
    text = str(err)[:300]
    return CheckResult(False, f"{type(err).__name__}: {text}" if text else type(err).__name__, took)
