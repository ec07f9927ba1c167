"""The writer side of the requests stream: records in, few large Redis commands out.

Where it sits: both receiver listeners hand every accepted record to ``StreamWriter.offer``
(a dict, packed once there) or ``offer_runs`` (runs of records the batch listener already
packed, see ``buffer``); both are synchronous and never await Redis. A background task
groups the buffer into stream entries of up to ``queue.records_per_entry`` records each
(``keys.ENTRY_FIELD`` = msgpack array header + the packed records) and writes them in one
pipeline: ``XADD MAXLEN ~`` per entry plus the ``counters`` and ``records_by_source``
increments, as one RESP payload (``resp``: the records are copied once, into it). Processing
reads the entries through its consumer group. Packing ~100 records per entry is what makes
this fast: ``bench/queue_packing.py`` measures it against one pipelined XADD per record.

Overload policy (nothing is lost silently): the buffer is bounded (records and bytes); when
the ``processing`` group's backlog is above ``queue.high_water`` or the buffer is full, new
records are shed and counted by reason (``high_water``, ``redis_down``, ``buffer_full``).
``MAXLEN`` is only a last-resort memory bound. When Redis is unreachable the writer keeps
what it already buffered (up to the bounds), retries with backoff, and resumes by itself; a
batch whose write failed half-way may be written twice (delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from node.config import QueueConfig
from node.metrics import ReceiverMetrics
from node.queue.buffer import RunBuffer, Sources, array_header
from node.queue.keys import ENTRY_FIELD, PROCESSING_GROUP, Keys
from node.queue.resp import CRLF, bulk_head, command, command_head, send_pipeline

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
MAX_ENTRIES_PER_PIPELINE = 64  # bounds one round trip's size and latency
MAX_PIPELINE_BYTES = 8 * 1024 * 1024  # ... also in bytes (approximately) when bodies are big
_EWMA = 0.2  # weight of the newest flush in the records-per-entry estimate


def _packb(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)  # type: ignore[no-any-return]


@dataclass(slots=True)
class _Batch:
    """Records taken from the buffer for one pipeline, as the RESP payload that writes them
    (built once, kept for retries)."""

    payload: bytes
    replies: int  # commands in the payload
    entries: int
    count: int
    size: int
    oldest: float  # monotonic time the oldest record was offered


@dataclass(frozen=True, slots=True)
class QueueDepth:
    length: int  # entries in the stream
    lag: int  # entries not yet delivered to the processing group
    pending: int  # entries delivered, not yet acknowledged
    group: bool  # False when the group does not exist yet (lag = length then)


async def read_depth(redis: aioredis.Redis, stream: str,
                     group: str = PROCESSING_GROUP) -> QueueDepth:
    """Length, lag and pending of ``group`` on ``stream`` (lag falls back to XLEN if unknown)."""
    length = int(await redis.xlen(stream))
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key: nothing written yet
        return QueueDepth(length, length, 0, False)
    for info in groups:
        name = info.get(b"name", info.get("name"))
        if name in (group, group.encode()):
            lag = info.get(b"lag", info.get("lag"))
            pending = int(info.get(b"pending", info.get("pending")) or 0)
            # lag is nil when Redis cannot compute it (after trims/deletes): XLEN bounds it.
            return QueueDepth(length, length if lag is None else int(lag), pending, True)
    return QueueDepth(length, length, 0, False)


class StreamWriter:
    """Buffers records and writes them to the requests stream; see the module docstring."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, cfg: QueueConfig,
                 metrics: ReceiverMetrics, *, maxlen: int | None = None,
                 redis_timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.keys = keys
        self.cfg = cfg
        self.metrics = metrics
        self.maxlen = maxlen or cfg.requests_maxlen
        self.redis_timeout_s = redis_timeout_s
        self._clock = clock
        self._buffer = RunBuffer()
        self._oldest = 0.0
        self._retry: list[_Batch] = []
        self._retry_count = 0
        self._retry_bytes = 0
        self._writing = 0  # records of the batch being written (neither buffer nor retry)
        self._writing_bytes = 0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()  # the flush loop has ended
        self._stopped = asyncio.Event()  # run() has returned
        self._closing = False
        self._deadline = 0.0
        self.redis_up = True
        self.over_high_water = False
        self.depth_records = 0
        self._records_per_entry = 1.0  # EWMA of what this writer packs; scales lag to records
        self._xadd_head = command_head(b"XADD", keys.requests.encode(), b"MAXLEN", b"~",
                                       b"%d" % self.maxlen, b"*", ENTRY_FIELD)
        self._counters_key = keys.counters.encode()
        self._by_source_key = keys.records_by_source.encode()
        metrics.redis_up.set(1)

    # ------------------------------------------------------------ hot path (synchronous)

    @property
    def buffered(self) -> int:
        """Records held here: buffered, being written, or kept for a retry."""
        return self._buffer.records + self._retry_count + self._writing

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.size + self._retry_bytes + self._writing_bytes

    def shed_reason(self, count: int = 1, size: int = 0) -> str | None:
        """Why ``count`` more records (``size`` bytes) would be shed now, or None."""
        if self.over_high_water:
            return "high_water"
        if (self.buffered + count > self.cfg.max_buffered_records
                or self.buffered_bytes + size > self.cfg.max_buffered_bytes):
            return "buffer_full" if self.redis_up else "redis_down"
        if self._closing:
            return "redis_down"
        return None

    def offer(self, record: dict[str, Any]) -> str | None:
        """Queue one record (packed here, once). None, or the reason it was shed."""
        packed = _packb(record)
        reason = self.shed_reason(1, len(packed))
        if reason is not None:
            self.metrics.shed.labels(reason).inc()
            return reason
        self._add(packed, 1, record["source"])
        return None

    def offer_runs(self, runs: Sequence[bytes], counts: Sequence[int],
                   sources: Sequence[Sources], size: int) -> str | None:
        """All of the runs or none (see ``buffer``): ``runs[i]`` is ``counts[i]`` packed
        records back to back (at most ``records_per_entry``), from ``sources[i]``; ``size``
        bytes together. None, or the reason they were shed."""
        count = sum(counts)
        reason = self.shed_reason(count, size)
        if reason is not None:
            self.metrics.shed.labels(reason).inc(count)
            return reason
        for run, n, source in zip(runs, counts, sources, strict=True):
            self._add(run, n, source)
        return None

    def _add(self, run: bytes, count: int, sources: Sources) -> None:
        buffer = self._buffer
        if not buffer.records:
            self._oldest = self._clock()
            self._wake.set()
        buffer.add(run, count, sources)
        if buffer.records >= self.cfg.records_per_entry:
            self._wake.set()

    # ------------------------------------------------------------ background task

    async def run(self) -> None:
        """Flush loop and depth refresh until ``close()``; never raises on Redis errors."""
        depth = asyncio.create_task(self._depth_loop(), name="queue-depth")
        try:
            await self._flush_loop()
        finally:
            self._done.set()  # also stops the depth loop
            # Not depth.cancel(): redis-py can swallow a cancellation that lands mid-command.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(depth), self.redis_timeout_s + 1)
            depth.cancel()
            self._drop_rest()
            self._stopped.set()

    async def _flush_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        while not (self._closing and (not self.buffered or self._clock() >= self._deadline)):
            await self._wait_for_work()
            if not self.buffered:
                continue
            if await self.flush():
                backoff = BACKOFF_MIN_S
                continue
            # SECURITY: bounded retry rate against a failing Redis; the handlers never wait.
            pause = backoff if not self._closing else min(backoff, self._deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                self._wake.clear()
                await asyncio.wait_for(self._wake.wait(), max(0.0, pause))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _wait_for_work(self) -> None:
        if not self.buffered and not self._closing:
            self._wake.clear()
            await self._wake.wait()
        if self._retry or self._closing:
            return
        # Let the buffer fill up to one entry, but no record waits longer than the interval.
        delay = self._oldest + self.cfg.flush_interval_ms / 1000 - self._clock()
        if self._buffer.records < self.cfg.records_per_entry and delay > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _take_batch(self) -> _Batch:
        per = self.cfg.records_per_entry
        limit = per * MAX_ENTRIES_PER_PIPELINE
        buffer = self._buffer
        if buffer.size > MAX_PIPELINE_BYTES:  # big bodies: fewer records per round trip
            average = buffer.size / buffer.records
            limit = max(per, min(limit, int(MAX_PIPELINE_BYTES / average)))
        taken = buffer.take(limit)
        oldest, self._oldest = self._oldest, self._clock()
        parts: list[bytes] = []
        entries = 0
        for count, runs in taken.entries(per):
            parts += self._xadd(count, runs)
            entries += 1
        increments = self._increments(taken.records, taken.sources)
        parts += increments
        return _Batch(b"".join(parts), entries + len(increments), entries, taken.records,
                      taken.size + entries * 5, oldest)

    def _xadd(self, count: int, runs: list[bytes]) -> list[bytes]:
        """``XADD`` of one entry: its value is a msgpack array (header, then the runs of
        packed records), written straight into the payload."""
        array = array_header(count)
        return [self._xadd_head, bulk_head(len(array) + sum(map(len, runs))), array, *runs,
                CRLF]

    def _increments(self, count: int, sources: dict[str, int]) -> list[bytes]:
        by_source = self._by_source_key
        return [command(b"HINCRBY", self._counters_key, b"records", b"%d" % count),
                *(command(b"HINCRBY", by_source, source.encode(), b"%d" % n)
                  for source, n in sources.items())]

    async def flush(self) -> bool:
        """Write the retained batch, else the next batch of the buffer. False if Redis failed.

        Only the flush loop calls this, so at most one batch is ever retained for retry; new
        records keep buffering behind it up to the bounds."""
        retried = bool(self._retry)
        batch = self._retry[0] if retried else self._take_batch()
        if not retried:
            self._writing, self._writing_bytes = batch.count, batch.size
        try:
            await self._write(batch)
        except (TimeoutError, RedisError, OSError) as exc:
            self._writing = self._writing_bytes = 0
            if not retried:
                self._retry.append(batch)
                self._retry_count += batch.count
                self._retry_bytes += batch.size
            self._set_redis_up(False, exc)
            return False
        self._writing = self._writing_bytes = 0
        if retried:
            self._retry.pop(0)
            self._retry_count -= batch.count
            self._retry_bytes -= batch.size
        self._set_redis_up(True)
        self._record_written(batch)
        return True

    async def _write(self, batch: _Batch) -> None:
        await send_pipeline(self.redis, batch.payload, batch.replies)

    def _record_written(self, batch: _Batch) -> None:
        self.metrics.enqueued.inc(batch.count)
        # One observation per pipeline: the wait of its oldest record (the worst case).
        self.metrics.enqueue_latency.observe(max(0.0, self._clock() - batch.oldest))
        per_entry = batch.count / max(1, batch.entries)
        self._records_per_entry += _EWMA * (per_entry - self._records_per_entry)
        self.metrics.buffered.set(self.buffered)

    def _set_redis_up(self, up: bool, exc: BaseException | None = None) -> None:
        if up != self.redis_up:
            if up:
                log.info("redis reachable again; resuming writes")
            else:
                log.warning("redis unreachable; buffering then shedding",
                            extra={"error": type(exc).__name__ if exc else ""})
        self.redis_up = up
        self.metrics.redis_up.set(1 if up else 0)
        self.metrics.buffered.set(self.buffered)

    async def _depth_loop(self) -> None:
        while not self._done.is_set():
            await self.refresh_depth()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.cfg.depth_interval_ms / 1000)

    async def refresh_depth(self) -> None:
        """Read the group's backlog and set the high-water flag (periodic, not per request)."""
        try:
            depth = await read_depth(self.redis, self.keys.requests)
        except (TimeoutError, RedisError, OSError) as exc:
            self._set_redis_up(False, exc)
            return
        if not self.redis_up:
            self._wake.set()  # retry the retained batches now, not after the backoff
        self._set_redis_up(True)
        records = int((depth.lag + depth.pending) * max(1.0, self._records_per_entry))
        self.depth_records = records
        self.over_high_water = records > self.cfg.high_water
        self.metrics.queue_depth.set(records)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, flush what is buffered within ``timeout_s``, count the rest as shed.

        ``run()`` must be running (it does the flushing and returns once done)."""
        self._closing = True
        self._deadline = self._clock() + timeout_s
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout_s + self.redis_timeout_s + 2)

    def _drop_rest(self) -> None:
        if self.buffered:
            self.metrics.shed.labels("redis_down").inc(self.buffered)
            log.warning("records not written at shutdown: redis unreachable",
                        extra={"records": self.buffered})
        self._buffer.clear()
        self._retry = []
        self._retry_count = self._retry_bytes = 0
        self._writing = self._writing_bytes = 0
        self.metrics.buffered.set(0)
