"""A Redis stream (for n8n and the like): `XADD <stream> MAXLEN ~ N * ...` per alert.

Delivery is at-least-once; consumers deduplicate on the `dedupKey` field.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from hydra_fleet.health.alerts import SinkError
from hydra_fleet.health.alerts.webhook import payload
from hydra_fleet.health.config import RedisSink
from hydra_fleet.health.store import Alert


class RedisStream:
    name = "redis"

    def __init__(self, config: RedisSink, timeout: float) -> None:
        self.config = config
        password = config.password_file.value if config.password_file is not None else None
        self.client = aioredis.Redis.from_url(
            config.url,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    async def send(self, alert: Alert) -> None:
        fields: dict[FieldT, EncodableT] = {
            "dedupKey": alert.dedup_key,
            "status": alert.status,
            "alertname": alert.labels.get("alertname", ""),
            "payload": json.dumps(payload(alert), sort_keys=True),
        }
        try:
            await self.client.xadd(
                self.config.stream, fields, maxlen=self.config.max_len, approximate=True
            )
        except RedisError as err:
            raise SinkError(f"redis: {err}") from err

    async def close(self) -> None:
        await self.client.aclose()
