"""`http`: request the URL; pass on an expected status (default 2xx/3xx) and optional body match.

`method: POST` with `jsonBody` makes an end-to-end probe, e.g. a one-token completion, for
engines whose `/health` answers while the engine behind it is dead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import aiohttp

from hydra_fleet.health.config import CheckConfig

if TYPE_CHECKING:
    from hydra_fleet.health.checks import CheckContext

MAX_BODY = 1 << 20


async def probe(check: CheckConfig, ctx: CheckContext) -> tuple[bool, str]:
    assert check.url is not None
    timeout = aiohttp.ClientTimeout(total=check.timeout, sock_connect=check.connect_timeout)
    try:
        async with ctx.session.request(
            check.method,
            check.url,
            json=check.json_body,
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            if not check.status_ok(resp.status):
                return False, f"HTTP {resp.status}"
            if check.body_match is not None:
                body = (await resp.content.read(MAX_BODY)).decode("utf-8", "replace")
                if not re.search(check.body_match, body):
                    return False, f"HTTP {resp.status}, body does not match {check.body_match!r}"
            return True, f"HTTP {resp.status}"
    except aiohttp.ConnectionTimeoutError:
        return False, f"no connection within {check.connect_timeout:g} s"
