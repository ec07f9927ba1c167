"""One processing worker: consumes ``<prefix>:requests`` as a member of the ``processing``
group, analyzes every record with the detection engine and emits the hits to ``<prefix>:hits``.

Flow of one batch (``Worker.step``): read entries (reclaimed first, see
node/queue/consumer.py) -> refresh exclusions (one GET) -> ``analyze(record, exclusions,
application)`` per record -> one Lua script (node/processing/commit.py) that, per entry,
XACKs it and, only if that ack removed it from the pending list, XADDs its hits (or moves it
to the dead-letter stream) and bumps the counters. A worker killed at any point either
committed an entry or wrote nothing for it; the entry is then reclaimed by a live worker and
analyzed again (same hit ids: ``hit_id(record_id, rule_id, point)``). A worker that was only
slow, and commits after the reclaimer did, writes nothing: each entry counts once.

An entry with a record whose analysis raises is not acked: it is redelivered after
``claim_idle_ms``, and on its ``max_deliveries``-th delivery it goes to the dead-letter stream
with the error (its other records' hits are emitted then). SIGTERM finishes the current batch,
commits it and exits 0.

``process_main`` is the entry point of a worker process started by the supervisor
(node/processing/supervisor.py); ``run_worker`` is the loop, usable in-process by tests with
an injected ``analyze``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from node import eventloop
from node.config import NodeConfig
from node.logs import safe, setup_logging
from node.metrics import HIT_CLASSES, ProcessingMetrics
from node.processing.applications import ApplicationMap
from node.processing.commit import CommitLimits, EntryOutcome, commit, commit_script
from node.processing.enrich import enrich_hits
from node.processing.exclusion_sync import ExclusionSync
from node.processing.telemetry import TelemetrySender
from node.queue.connection import redis_client
from node.queue.consumer import GroupConsumer, StreamEntry
from node.queue.keys import PROCESSING_GROUP, Keys
from node.records import Hit

log = logging.getLogger(__name__)

# analyze(record, exclusions, application) -> hits; Engine.analyze has this shape.
Analyze = Callable[[Any, Any, str], list[Hit]]
AnalyzerFactory = Callable[[NodeConfig], Analyze]

RETRY_PAUSE_MAX_S = 5.0  # longest pause after a Redis error before trying again


def engine_analyzer(cfg: NodeConfig) -> Analyze:
    """The real analyzer: the detection engine, loaded (or its Hyperscan DB compiled) once."""
    from node.detectors import hotpath  # worker process only
    from node.detectors.engine import Engine, freeze_loaded_state

    engine = Engine.load(cfg.detection, cfg.data_path / "cache",
                         time_budget_ms=cfg.processing.time_budget_ms)
    freeze_loaded_state()
    log.info("rules loaded", extra={"rules": len(engine.report.loaded),
                                    "failed": len(engine.report.failed),
                                    "cache_hit": engine.cache_hit,
                                    "hot_path": hotpath.describe()})
    return engine.analyze


class Worker:
    def __init__(self, cfg: NodeConfig, redis: aioredis.Redis, analyze: Analyze,
                 metrics: ProcessingMetrics, consumer_name: str,
                 busy: Any = None) -> None:
        """``busy``: a shared double (multiprocessing RawValue) holding the monotonic time the
        record being analyzed started, 0 when idle; the supervisor kills a worker stuck on one
        record (see processing.record_timeout_s)."""
        self.cfg = cfg
        self.busy = busy
        self.keys = Keys(cfg.redis.prefix)
        self.redis = redis
        self.analyze = analyze
        self.metrics = metrics
        self.consumer = GroupConsumer(
            redis, self.keys.requests, PROCESSING_GROUP, consumer_name,
            dead_stream=self.keys.requests_dead, batch_entries=cfg.processing.batch_entries,
            block_ms=cfg.processing.block_ms, claim_idle_ms=cfg.processing.claim_idle_ms,
            max_deliveries=cfg.processing.max_deliveries, counters_key=self.keys.counters,
            dead_maxlen=cfg.queue.requests_maxlen)
        self._commit = commit_script(redis)
        self.limits = CommitLimits(cfg.queue.hits_maxlen, cfg.queue.requests_maxlen,
                                   cfg.queue.records_per_entry)
        self.exclusions = ExclusionSync(redis, self.keys)
        self.applications = ApplicationMap(cfg.aggregation.applications)
        self._budget_s = cfg.processing.time_budget_ms / 1000.0
        # The engine never raises: it counts its internal errors in ``engine.stats`` instead.
        # ``analyze`` is then the bound method Engine.analyze; injected test analyzers have none.
        self._engine_stats = getattr(getattr(analyze, "__self__", None), "stats", None)
        self._engine_errors = 0
        self._dead_letters = 0

    async def step(self) -> int:
        """Read one batch, analyze it and commit it; returns the number of entries read."""
        entries = await self.consumer.read()
        if entries:
            exclusions = await self.exclusions.refresh()
            outcome = self.analyze_batch(entries, exclusions)
            committed = await self.commit(outcome)
            self.count(entries, committed)
        # Also what the consumer dead-lettered by itself (undecodable, delivered too often).
        self.metrics.dead_letters.inc(self.consumer.dead_letters - self._dead_letters)
        self._dead_letters = self.consumer.dead_letters
        return len(entries)

    # ------------------------------------------------------------------ analysis

    def analyze_batch(self, entries: Sequence[StreamEntry],
                      exclusions: Any) -> list[EntryOutcome]:
        """The entries to commit: acked, or dead-lettered with their error, with their hits.
        An entry whose analysis raised before its last delivery is left out: not acked, it
        is redelivered after claim_idle_ms."""
        done = []
        for entry in entries:
            hits, error = self.analyze_entry(entry, exclusions)
            if error is None or entry.deliveries >= self.cfg.processing.max_deliveries:
                done.append(EntryOutcome(entry, hits, error))
        return done

    def analyze_entry(self, entry: StreamEntry, exclusions: Any) -> tuple[list[Hit], str | None]:
        """All hits of the entry's records, and the first error if a record raised."""
        hits: list[Hit] = []
        errors: list[str] = []
        for index, record in enumerate(entry.items):
            try:
                hits.extend(self.analyze_record(record, exclusions))
            except Exception as exc:  # one bad record must never stop the worker
                self.metrics.errors.labels("analyze").inc()
                errors.append(f"record {index} ({safe(record.get('id', ''), 64)}): "
                              f"{type(exc).__name__}: {exc}")
        if not errors:
            return hits, None
        # SECURITY: the message may quote the record; it goes to the dead-letter stream
        # (escaped wherever shown), the log line carries no record text.
        log.warning("analysis raised", extra={"entry_id": entry.id.decode(),
                                              "failed_records": len(errors),
                                              "deliveries": entry.deliveries})
        return hits, errors[0]

    def analyze_record(self, record: dict[Any, Any], exclusions: Any) -> list[Hit]:
        application = self.applications.resolve(record.get("host") or "")
        started = time.perf_counter()
        if self.busy is not None:
            self.busy.value = time.monotonic()
        try:
            return enrich_hits(record, self.analyze(record, exclusions, application))
        finally:
            if self.busy is not None:
                self.busy.value = 0.0
            elapsed = time.perf_counter() - started
            self.metrics.scan_seconds.observe(elapsed)
            if elapsed > self._budget_s:
                self.metrics.budget_overruns.inc()

    # ------------------------------------------------------------------ commit

    async def commit(self, outcomes: Sequence[EntryOutcome]) -> list[EntryOutcome]:
        """Ack, emit and dead-letter per entry, each only if no other worker committed the
        entry first (node/processing/commit.py); returns the entries committed here."""
        committed = await commit(self._commit, self.keys, PROCESSING_GROUP, self.limits,
                                 outcomes)
        for done in committed:
            if done.error is not None:
                self.consumer.dead_lettered(done.entry)
        return committed

    def count(self, entries: Sequence[StreamEntry], committed: Sequence[EntryOutcome]) -> None:
        m = self.metrics
        m.records.inc(sum(len(done.entry.items) for done in committed))
        m.reclaimed.inc(sum(1 for e in entries if e.deliveries > 1))
        for hit in (hit for done in committed for hit in done.hits):
            cls = hit.get("class", "")
            m.hits.labels(cls if cls in HIT_CLASSES else "other").inc()
        errors = int(getattr(self._engine_stats, "errors", 0))
        if errors > self._engine_errors:
            m.errors.labels("engine").inc(errors - self._engine_errors)
            self._engine_errors = errors


async def run_worker(cfg: NodeConfig, stop: asyncio.Event, analyze: Analyze, *,
                     consumer_name: str, metrics: ProcessingMetrics,
                     redis: aioredis.Redis | None = None, busy: Any = None) -> None:
    """Process batches until ``stop`` is set; the batch in progress is finished and committed."""
    own = redis is None
    client = redis_client(cfg.redis) if redis is None else redis
    worker = Worker(cfg, client, analyze, metrics, consumer_name, busy)
    pause, group_ok = 0.1, False
    try:
        while not stop.is_set():
            try:
                if not group_ok:
                    await worker.consumer.ensure_group()
                    group_ok = True
                await worker.step()
                pause = 0.1
            except (RedisError, OSError) as exc:
                metrics.errors.labels("redis").inc()
                log.warning("redis error, retrying", extra={"error": safe(exc)})
                await _wait(stop, pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX_S)
    finally:
        if own:
            await client.aclose()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


# ---------------------------------------------------------------------- worker process


def process_main(cfg: NodeConfig, slot: int, conn: Connection,
                 analyzer_factory: AnalyzerFactory | None = None,
                 consumer_name: str | None = None, busy: Any = None) -> None:
    """Entry point of a worker process (multiprocessing spawn): load, then run until SIGTERM."""
    setup_logging(cfg.logging, "processing")
    name = consumer_name or f"{os.uname().nodename}-{os.getpid()}"
    try:
        eventloop.run(_process(cfg, slot, conn, analyzer_factory or engine_analyzer, name,
                               busy), cfg.event_loop)
    except Exception:
        log.exception("worker failed", extra={"slot": slot})
        raise SystemExit(1) from None


async def _process(cfg: NodeConfig, slot: int, conn: Connection,
                   factory: AnalyzerFactory, name: str, busy: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    metrics = ProcessingMetrics(registry)
    sender = TelemetrySender(conn, registry, slot)
    analyze = factory(cfg)  # rules load before the worker reports ready
    sender.ready = True
    log.info("worker ready", extra={"slot": slot, "consumer": name})
    watch = asyncio.create_task(_watch(stop, sender, os.getppid()))
    try:
        await run_worker(cfg, stop, analyze, consumer_name=name, metrics=metrics, busy=busy)
    finally:
        watch.cancel()
        sender.send()  # final totals, so the supervisor's counters lose nothing on a clean exit
    log.info("worker stopped", extra={"slot": slot})


async def _watch(stop: asyncio.Event, sender: TelemetrySender, parent: int) -> None:
    """Push metrics every second; stop when the supervisor is gone (never run orphaned)."""
    while not stop.is_set():
        if os.getppid() != parent or not sender.send():
            log.warning("supervisor gone, stopping")
            stop.set()
            return
        await _wait(stop, 1.0)
