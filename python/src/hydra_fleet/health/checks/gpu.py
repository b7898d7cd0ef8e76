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
    """Compare `hydra_gpu_up == 1` per vendor with `hydra_gpu_expected_devices{vendor}`; a
    failure names the cards that are down (by `hydra_gpu_info`'s name) or not listed."""
    up: Counter[str] = Counter()
    listed: Counter[str] = Counter()
    down: list[tuple[str, str]] = []  # (vendor, index) with up == 0
    names: dict[tuple[str, str], str] = {}
    expected: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                vendor = sample.labels.get("vendor", "")
                device = (vendor, sample.labels.get("index", "?"))
                if sample.name == "hydra_gpu_up":
                    listed[vendor] += 1
                    if sample.value == 1:
                        up[vendor] += 1
                    else:
                        down.append(device)
                elif sample.name == "hydra_gpu_info" and sample.labels.get("name"):
                    names[device] = sample.labels["name"]
                elif sample.name == "hydra_gpu_expected_devices":
                    expected[vendor] = int(sample.value)
    except ValueError as err:
        return False, f"exporter answered unparsable metrics: {err}"
    if not expected:
        return False, "exporter reports no hydra_gpu_expected_devices"
    short = {v: f"{up[v]}/{n}" for v, n in sorted(expected.items()) if up[v] < n}
    if short:
        cards = [
            f"{vendor} {index}"
            + (f" ({names[(vendor, index)]})" if (vendor, index) in names else "")
            + " down"
            for vendor, index in down
            if vendor in short
        ]
        cards += [
            f"{n - listed[v]} {v} not listed"
            for v, n in sorted(expected.items())
            if v in short and listed[v] < n
        ]
        counts = ", ".join(f"{v} {c} up" for v, c in short.items())
        return False, f"GPUs missing: {counts}: " + "; ".join(cards)
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
