"""Check kinds. Every check runs under a hard deadline: `run_check` never takes longer than
the check's `timeout` (plus scheduling noise), whatever the peer does."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import aiohttp

from hydra_fleet.health.config import CheckConfig


@dataclasses.dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    duration: float


@dataclasses.dataclass
class CheckContext:
    """What checks share: one HTTP session (no connection limit, so 1,000 checks run at once)."""

    session: aiohttp.ClientSession
    systemctl: str = "systemctl"

    @classmethod
    def create(cls, systemctl: str = "systemctl") -> CheckContext:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        return cls(aiohttp.ClientSession(connector=connector), systemctl)

    async def close(self) -> None:
        await self.session.close()


async def run_check(check: CheckConfig, ctx: CheckContext) -> CheckResult:
    from hydra_fleet.health.checks import command, gpu, http, systemd, tcp  # noqa: PLC0415

    runners = {
        "http": http.probe,
        "tcp": tcp.probe,
        "systemd": systemd.probe,
        "gpu": gpu.probe,
        "command": command.probe,
    }
    started = time.monotonic()
    try:
        async with asyncio.timeout(check.timeout):
            ok, detail = await runners[check.type](check, ctx)
    except TimeoutError:
        ok, detail = False, f"no answer within the {check.timeout:g} s deadline"
    except aiohttp.ClientConnectorError as err:
        code = err.os_error.errno
        reason = os.strerror(code) if code else str(err.os_error)
        ok, detail = False, f"cannot connect to {err.host}:{err.port}: {reason}"
    except (aiohttp.ClientError, OSError) as err:
        ok, detail = False, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return CheckResult(ok, detail, time.monotonic() - started)
