"""Redis clients built from the config (TCP, TLS or the embedded server's unix socket)."""

from __future__ import annotations

import redis.asyncio as aioredis

from node.config import RedisConfig


def redis_client(cfg: RedisConfig, *, max_connections: int = 32) -> aioredis.Redis:
    """An asyncio client that returns bytes (records are msgpack, never decoded to str)."""
    if not cfg.url:
        raise ValueError("redis.url is not set (start the embedded server first)")
    return aioredis.Redis.from_url(
        cfg.url,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
        max_connections=max_connections,
        decode_responses=False,
        retry_on_timeout=False,
        health_check_interval=0,
    )
