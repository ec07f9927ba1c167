"""The consumer side of aggregation: reads ``<prefix>:hits`` as a member of the
``aggregation`` group, stores each batch (store.AttackStore.apply, whose MULTI also acks the
entries), then hands attack events to the sinks and updates the metrics. A second task applies
retention every ``TRIM_INTERVAL_S``.

Failure handling: a Redis error leaves the batch pending (it is redelivered, and idempotency
makes that harmless) and the loop backs off; a batch that fails for another reason is retried
entry by entry, and an entry that still fails goes to the hits dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from redis.exceptions import RedisError

from node.aggregation.grouping import events
from node.aggregation.sinks import Sinks
from node.aggregation.store import Applied, AttackStore
from node.config import NodeConfig
from node.logs import safe
from node.metrics import AggregationMetrics, class_label
from node.queue.consumer import GroupConsumer, StreamEntry
from node.queue.keys import AGGREGATION_GROUP, Keys

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 10.0
OBSERVE_INTERVAL_S = 1.0
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
DEAD_MAXLEN = 10000
CLOSE_ROUNDS, CLOSE_ROUND_S = 50, 0.1
MAX_BLOCK_MS = 1000  # so the loop notices shutdown and refreshes its gauges


def consumer_name() -> str:
    return f"aggregation-{socket.gethostname()}-{os.getpid()}"


class Aggregator:
    def __init__(self, cfg: NodeConfig, metrics: AggregationMetrics, *,
                 consume: bool = True) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.consume = consume
        self.ready = False
        self.processed = 0  # hits counted (tests compare it, never wall-clock time)
        self._tasks: list[asyncio.Task[None]] = []
        self._next_observe = 0.0
        self._stop = asyncio.Event()

    async def start(self, redis: Any, keys: Keys, store: AttackStore, sinks: Sinks) -> None:
        self.store, self.sinks = store, sinks
        p = self.cfg.processing
        self.consumer = GroupConsumer(
            redis, keys.hits, AGGREGATION_GROUP, consumer_name(), dead_stream=keys.hits_dead,
            batch_entries=p.batch_entries, block_ms=min(p.block_ms, MAX_BLOCK_MS),
            claim_idle_ms=p.claim_idle_ms, max_deliveries=p.max_deliveries,
            counters_key=keys.counters, dead_maxlen=DEAD_MAXLEN)
        if not self.consume:
            self.ready = True
            return
        self._tasks = [asyncio.create_task(self._consume(), name="aggregation-consume"),
                       asyncio.create_task(self._retain(), name="aggregation-retention")]

    async def close(self) -> None:
        """Stop both loops. The Redis client can swallow a cancellation (seen with redis-py
        8 while a command is in flight), so the loops also watch ``_stop`` and the cancel is
        repeated until they are gone (bounded)."""
        self._stop.set()
        pending = set(self._tasks)
        for _ in range(CLOSE_ROUNDS):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CLOSE_ROUND_S)
        log.error("aggregation: background tasks did not stop")

    async def _consume(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.ready:
                    await self.consumer.ensure_group()
                    self.ready = True
                entries = await self.consumer.read()
                if entries:
                    await self.handle(entries)
                await self._observe()
                failures = 0
            except RedisError as exc:
                self.metrics.errors.labels("redis").inc()
                log.warning("aggregation: redis error, retrying", extra={"error": safe(exc)})
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1

    async def handle(self, entries: list[StreamEntry]) -> None:
        """Store a batch and ack it in the same transaction; fall back to entry by entry."""
        try:
            applied = await self._apply(entries)
        except RedisError:
            raise
        except Exception:  # noqa: BLE001 - bad data must not stall the group
            self.metrics.errors.labels("data").inc()
            log.exception("aggregation: batch failed, retrying entry by entry")
            for entry in entries:
                await self._apply_one(entry)
            return
        self._account(applied)

    async def _apply(self, entries: list[StreamEntry]) -> Applied:
        ids = [e.id for e in entries]
        items = [item for e in entries for item in e.items]
        return await self.store.apply(items, lambda pipe: self.consumer.queue_ack(pipe, ids))

    async def _apply_one(self, entry: StreamEntry) -> None:
        try:
            self._account(await self._apply([entry]))
        except RedisError:
            raise
        except Exception as exc:  # noqa: BLE001
            await self.consumer.dead_letter(entry, f"{type(exc).__name__}: {exc}")

    def _account(self, applied: Applied) -> None:
        m = self.metrics
        for hit in applied.counted:
            m.hits.labels(class_label(hit["class"])).inc()
        for attack_id in applied.result.created:
            m.attacks.labels(class_label(applied.result.attacks[attack_id]["class"])).inc()
        m.duplicates.inc(applied.duplicates)
        m.redelivered.inc(applied.redelivered)
        if applied.counted:
            newest = max(h["ts"] for h in applied.counted)
            m.delay.set(max(0.0, time.time() - newest))
        self.processed += len(applied.counted)
        for kind, attack in events(applied.result, self.cfg.sinks.webhook_update_every):
            self.sinks.publish(kind, attack)

    async def _observe(self) -> None:
        now = time.monotonic()
        if now < self._next_observe:
            return
        self._next_observe = now + OBSERVE_INTERVAL_S
        lag, pending = await self.consumer.backlog()
        self.metrics.lag.set(lag)
        self.metrics.pending.set(pending)

    async def _retain(self) -> None:
        while not self._stop.is_set():
            try:
                await self.store.trim()
            except RedisError as exc:
                log.warning("aggregation: retention failed", extra={"error": safe(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TRIM_INTERVAL_S)
