"""`systemd`: `systemctl is-active UNIT` answers "active"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_fleet.health.checks.command import run_argv
from hydra_fleet.health.config import CheckConfig

if TYPE_CHECKING:
    from hydra_fleet.health.checks import CheckContext


async def probe(check: CheckConfig, ctx: CheckContext) -> tuple[bool, str]:
    assert check.unit is not None
    code, output = await run_argv([ctx.systemctl, "is-active", check.unit], check.timeout)
    if code == 127:
        return False, output
    state = output.strip().splitlines()[-1] if output.strip() else "unknown"
    return state == "active", f"{check.unit} is {state}"
