"""What both receiver listeners share, built once by ``service.serve`` (or a test) and passed
to the app factories: config, metrics, the stream writer, the real-IP resolver, the id
generator and the batch token."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from node.config import NodeConfig
from node.ids import UlidGenerator
from node.metrics import ReceiverMetrics
from node.queue.streams import StreamWriter
from node.receiver.realip import RealIp


@dataclass(frozen=True)
class ReceiverContext:
    cfg: NodeConfig
    registry: CollectorRegistry
    metrics: ReceiverMetrics
    redis: aioredis.Redis
    writer: StreamWriter
    realip: RealIp
    ids: UlidGenerator
    batch_token: str | None  # None: /v1/batch refuses everything (401)

    @classmethod
    def create(cls, cfg: NodeConfig, redis: aioredis.Redis, batch_token: str | None,
               registry: CollectorRegistry | None = None) -> ReceiverContext:
        from node.queue.keys import Keys

        registry = registry or CollectorRegistry()
        metrics = ReceiverMetrics(registry)
        writer = StreamWriter(redis, Keys(cfg.redis.prefix), cfg.queue, metrics,
                              redis_timeout_s=cfg.redis.socket_timeout_s)
        rcv = cfg.receiver
        realip = RealIp(rcv.trusted_proxies, rcv.real_ip_header, rcv.real_ip_recursive)
        return cls(cfg, registry, metrics, redis, writer, realip, UlidGenerator(), batch_token)
