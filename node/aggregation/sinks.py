"""Where attack events go besides the API: a signed webhook and JSON lines for log shippers.

Aggregation calls ``Sinks.publish(kind, attack)`` after a batch is stored; ``publish`` never
waits: the webhook has a bounded queue (the oldest event is dropped and counted when it is
full) drained by its own task, which retries with exponential backoff. A webhook that is down
or slow therefore costs aggregation nothing but dropped events.

Event payload (JSON): ``{"event": "attack.new" | "attack.update", "sent_at": <epoch s>,
"attack": {<the attack without sample hits>}, "last_hit": {<newest sample hit>} | null}``.
Signature: ``X-OOB-Signature: sha256=<hex HMAC-SHA256 of the exact body with webhook_secret>``;
``X-OOB-Event`` repeats the kind and ``X-OOB-Delivery`` is a unique id per event (the same on
retries, so a receiver can de-duplicate).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import sys
import time
import uuid
from typing import IO

import aiohttp
import orjson

from node.aggregation.grouping import Attack, public
from node.config import SinksConfig
from node.logs import safe
from node.metrics import AggregationMetrics

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_STATUSES = frozenset({408, 425, 429})  # plus every 5xx


def event_payload(kind: str, attack: Attack, now: float | None = None) -> bytes:
    samples = attack.get("sample_hits") or []
    last = public({"sample_hits": samples[-1:]})["sample_hits"]
    body = {"event": kind, "sent_at": time.time() if now is None else now,
            "attack": public(attack, samples=False), "last_hit": last[0] if last else None}
    return orjson.dumps(body, default=str)


def sign(secret: str, body: bytes) -> str:
    """The X-OOB-Signature value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"

    def __init__(self, cfg: SinksConfig, metrics: AggregationMetrics, *,
                 backoff_base_s: float = BACKOFF_BASE_S) -> None:
        assert cfg.webhook_url
        self.url = cfg.webhook_url
        self.secret = cfg.webhook_secret
        self.timeout = aiohttp.ClientTimeout(total=cfg.webhook_timeout_s)
        self.retries = cfg.webhook_retries
        self.backoff_base_s = backoff_base_s
        self.metrics = metrics
        self.queue: collections.deque[tuple[str, str, bytes]] = collections.deque(
            maxlen=cfg.webhook_queue_size)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def publish(self, kind: str, body: bytes) -> None:
        """Queue an event; never blocks. A full queue drops its oldest event (counted)."""
        if len(self.queue) == self.queue.maxlen:
            self.metrics.sink_dropped.labels(self.name).inc()
        self.queue.append((kind, uuid.uuid4().hex, body))
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        self._task = asyncio.create_task(self._run(), name="webhook-sink")
        if not self.secret:
            log.warning("sinks.webhook_secret is not set: webhook events are sent unsigned")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, delivery, body = self.queue.popleft()
            await self._deliver(kind, delivery, body)

    async def _deliver(self, kind: str, delivery: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-OOB-Event": kind,
                   "X-OOB-Delivery": delivery, "User-Agent": "oob-node"}
        if self.secret:
            headers["X-OOB-Signature"] = sign(self.secret, body)
        for attempt in range(self.retries):
            if attempt:
                await asyncio.sleep(min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** (attempt - 1)))
            retry = await self._attempt(headers, body)
            if retry is None:
                self.metrics.sink_deliveries.labels(self.name).inc()
                return
            self.metrics.sink_failures.labels(self.name).inc()
            if not retry:
                break
        self.metrics.sink_dropped.labels(self.name).inc()

    async def _attempt(self, headers: dict[str, str], body: bytes) -> bool | None:
        """None: delivered; True: failed, worth retrying; False: refused for good (4xx)."""
        assert self._session is not None
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status < 300:
                    return None
                log.warning("webhook answered %s", resp.status)
                return resp.status >= 500 or resp.status in RETRY_STATUSES
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("webhook delivery failed: %s", safe(type(exc).__name__))
            return True


class JsonlSink:
    """One JSON line per event to a file (appended) or stdout (``-``), flushed per line."""

    name = "jsonl"

    def __init__(self, target: str, metrics: AggregationMetrics) -> None:
        self.target = target
        self.metrics = metrics
        self._fh: IO[bytes] | None = None

    async def start(self) -> None:
        self._fh = sys.stdout.buffer if self.target == "-" else open(self.target, "ab")  # noqa: SIM115

    async def close(self) -> None:
        if self._fh is not None and self.target != "-":
            self._fh.close()

    def publish(self, kind: str, body: bytes) -> None:
        assert self._fh is not None
        try:
            self._fh.write(body + b"\n")
            self._fh.flush()
            self.metrics.sink_deliveries.labels(self.name).inc()
        except OSError:
            self.metrics.sink_failures.labels(self.name).inc()
            self.metrics.sink_dropped.labels(self.name).inc()


class Sinks:
    """Every configured sink; ``publish`` serializes an event once and hands it to each."""

    def __init__(self, cfg: SinksConfig, metrics: AggregationMetrics) -> None:
        self.sinks: list[WebhookSink | JsonlSink] = []
        if cfg.webhook_url:
            self.sinks.append(WebhookSink(cfg, metrics))
        if cfg.jsonl:
            self.sinks.append(JsonlSink(cfg.jsonl, metrics))

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()

    def publish(self, kind: str, attack: Attack) -> None:
        if not self.sinks:
            return
        body = event_payload(kind, attack)
        for sink in self.sinks:
            sink.publish(kind, body)
