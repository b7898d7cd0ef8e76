"""ntfy: `POST <url>/<topic>` with a title, a priority (5 for critical) and tags."""

from __future__ import annotations

import aiohttp

from hydra_fleet.health.alerts import SinkError
from hydra_fleet.health.config import NtfySink
from hydra_fleet.health.store import Alert

PRIORITY = {"critical": "5", "warning": "4"}


class Ntfy:
    name = "ntfy"

    def __init__(self, config: NtfySink, session: aiohttp.ClientSession, timeout: float) -> None:
        self.config = config
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, alert: Alert) -> None:
        labels = alert.labels
        firing = alert.status == "firing"
        title = f"[{alert.status.upper()}] {labels.get('alertname', 'alert')}"
        if "check" in labels:
            title += f" {labels['check']}"
        if "host" in labels:
            title += f" on {labels['host']}"
        headers = {
            "Title": title,
            "Priority": PRIORITY.get(labels.get("severity", ""), "3") if firing else "2",
            "Tags": "rotating_light" if firing else "white_check_mark",
        }
        if self.config.token_file is not None:
            headers["Authorization"] = f"Bearer {self.config.token_file.value}"
        body = alert.annotations.get("description") or alert.annotations.get("summary") or title
        url = self.config.url.rstrip("/") + "/" + self.config.topic
        async with self.session.post(
            url, data=body.encode(), headers=headers, timeout=self.timeout
        ) as resp:
            if not 200 <= resp.status < 300:
                raise SinkError(f"ntfy answered HTTP {resp.status}")

    async def close(self) -> None:
        pass
