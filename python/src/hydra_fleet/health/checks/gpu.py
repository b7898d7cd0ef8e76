"""`gpu`: scrape the exporter; every vendor shows at least its expected devices with up == 1."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hydra_fleet.health.config import CheckConfig

if TYPE_CHECKING:
    from hydra_fleet.health.checks import CheckContext


def judge(text: str) -> tuple[bool, str]:
    """Compare `hydra_gpu_up == 1` per vendor with `hydra_gpu_expected_devices{vendor}`."""
    up: Counter[str] = Counter()
    expected: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                vendor = sample.labels.get("vendor", "")
                if sample.name == "hydra_gpu_up" and sample.value == 1:
                    up[vendor] += 1
                elif sample.name == "hydra_gpu_expected_devices":
                    expected[vendor] = int(sample.value)
    except ValueError as err:
        return False, f"exporter answered unparsable metrics: {err}"
    if not expected:
        return False, "exporter reports no hydra_gpu_expected_devices"
    short = {v: f"{up[v]}/{n}" for v, n in sorted(expected.items()) if up[v] < n}
    if short:
        return False, "GPUs missing: " + ", ".join(f"{v} {c} up" for v, c in short.items())
    return True, ", ".join(f"{v} {up[v]}/{n} up" for v, n in sorted(expected.items()))


async def probe(check: CheckConfig, ctx: CheckContext) -> tuple[bool, str]:
    assert check.url is not None
    timeout = aiohttp.ClientTimeout(total=check.timeout, sock_connect=check.connect_timeout)
    try:
        async with ctx.session.get(check.url, timeout=timeout) as resp:
            if resp.status != 200:
                return False, f"exporter answered HTTP {resp.status}"
            text = await resp.text()
    except aiohttp.ConnectionTimeoutError:
        return False, f"no connection within {check.connect_timeout:g} s"
    return judge(text)
