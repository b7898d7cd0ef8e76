"""`tcp`: the port accepts a connection within the connect timeout."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

from hydra_fleet.health.config import CheckConfig

if TYPE_CHECKING:
    from hydra_fleet.health.checks import CheckContext


async def probe(check: CheckConfig, ctx: CheckContext) -> tuple[bool, str]:
    assert check.host is not None
    assert check.port is not None
    try:
        async with asyncio.timeout(check.connect_timeout):
            _, writer = await asyncio.open_connection(check.host, check.port)
    except TimeoutError:
        return False, f"no connection within {check.connect_timeout:g} s"
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # the agent's trouble, not the service's: an inconclusive check
        reason = os.strerror(err.errno) if err.errno else str(err)
        return False, f"cannot connect to {check.host}:{check.port}: {reason}"
    writer.close()
    try:
        async with asyncio.timeout(0.5):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        pass
    return True, "connected"
