"""The processing role: ``serve(cfg, stop)`` runs ``processing.workers`` worker processes and
the role's ``/metrics``, ``/healthz``, ``/readyz`` listener (``processing.metrics_listen``).

Workers are multiprocessing *spawn* children (a fresh interpreter each: no inherited event
loop, Redis connections or Hyperscan scratch) running ``node.processing.worker.process_main``
with the picklable ``NodeConfig``. A worker that dies is restarted with a growing backoff;
its unacked entries are reclaimed by the others meanwhile (at-least-once, see worker.py). On
stop every worker gets SIGTERM, finishes and commits its batch, and exits; one still running
after ``processing.shutdown_grace_s`` is killed (its batch is then simply redelivered).
A worker stuck on one record for ``processing.record_timeout_s`` (a record that hangs the
engine) is killed too: each worker publishes, in a shared double, when its current record
started; its entries are reclaimed one at a time, so only the culprit entry ends up
dead-lettered.

Metrics: each worker pushes its counters over a pipe and the supervisor sums them
(node/processing/telemetry.py); the supervisor adds the group's lag and pending counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from node.config import NodeConfig, parse_listen
from node.metrics import ProcessingQueueMetrics
from node.processing.telemetry import WorkerSamples, drain
from node.processing.worker import AnalyzerFactory, process_main
from node.queue.connection import redis_client
from node.queue.consumer import GroupConsumer
from node.queue.keys import PROCESSING_GROUP, Keys

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often children, pipes and the backlog are looked at
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
STABLE_AFTER_S = 60.0  # a worker that lived this long resets its slot's backoff


@dataclass
class Slot:
    """One of the N worker positions and the process currently filling it."""

    index: int
    busy: Any = None  # shared double: start time of the record being analyzed, 0 when idle
    process: BaseProcess | None = None
    conn: Connection | None = None
    started: float = 0.0
    failures: int = 0  # consecutive short-lived runs, for the backoff
    restart_at: float = 0.0


@dataclass
class Pool:
    cfg: NodeConfig
    factory: AnalyzerFactory | None
    samples: WorkerSamples
    metrics: ProcessingQueueMetrics
    slots: list[Slot] = field(init=False)

    def __post_init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [Slot(i, self.ctx.RawValue("d", 0.0))
                      for i in range(self.cfg.processing.workers)]
        self.tag = f"{os.uname().nodename}-{os.getpid()}"
        self.warm = False  # some worker has loaded the rules (the compiled cache exists)

    def start(self, slot: Slot) -> None:
        receiver, sender = self.ctx.Pipe(duplex=False)
        # Stable per-slot consumer names: a restarted worker reuses its name instead of
        # leaving a new dead consumer in the group each time.
        name = f"{self.tag}-w{slot.index}"
        proc = self.ctx.Process(target=process_main, name=f"oob-processing-{slot.index}",
                                args=(self.cfg, slot.index, sender, self.factory, name,
                                      slot.busy),
                                daemon=True)
        proc.start()
        sender.close()  # the child holds its own copy; ours would hide its exit from recv()
        slot.busy.value = 0.0
        slot.process, slot.conn, slot.started = proc, receiver, time.monotonic()
        log.info("worker started", extra={"slot": slot.index, "pid": proc.pid})

    def tick(self) -> None:
        """Collect metrics, notice dead workers and restart them when their backoff expired."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.conn is not None:
                drain(slot.conn, self.samples)
            self._kill_if_stuck(slot, now)
            if slot.process is not None and not slot.process.is_alive():
                self._reap(slot, now)
            if slot.process is None and now >= slot.restart_at and self._may_start(slot):
                self.start(slot)
        ready = self.ready_count()
        self.warm = self.warm or ready > 0
        self.metrics.workers.set(ready)

    def _may_start(self, slot: Slot) -> bool:
        """Until one worker has loaded the rules, only slot 0 runs: on a cold cache it compiles
        the Hyperscan database once and writes it to <data_dir>/cache, and the others then
        load it instead of each compiling it again (CPU and memory spike x N)."""
        return self.warm or slot.index == 0

    def _kill_if_stuck(self, slot: Slot, now: float) -> None:
        """SECURITY: a record that hangs the engine (e.g. catastrophic backtracking) must not
        hold a worker forever: kill it; its entry is reclaimed alone by another worker and,
        once delivered more than max_deliveries times, dead-lettered."""
        started = slot.busy.value
        proc = slot.process
        if not started or proc is None or not proc.is_alive():
            return
        if now - started > self.cfg.processing.record_timeout_s:
            log.error("worker stuck on one record, killing it",
                      extra={"slot": slot.index, "pid": proc.pid,
                             "stuck_s": round(now - started, 1)})
            proc.kill()
            proc.join(timeout=5)
            self.metrics.stuck_killed.inc()

    def _reap(self, slot: Slot, now: float) -> None:
        proc = slot.process
        assert proc is not None
        self.samples.retire(proc.pid or 0)
        if slot.conn is not None:
            slot.conn.close()
        lived = now - slot.started
        slot.failures = 0 if lived >= STABLE_AFTER_S else slot.failures + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** max(slot.failures - 1, 0))
        slot.process, slot.conn, slot.restart_at = None, None, now + delay
        self.metrics.restarts.inc()
        log.warning("worker died, restarting", extra={"slot": slot.index, "pid": proc.pid,
                                                      "exitcode": proc.exitcode,
                                                      "restart_in_s": round(delay, 2)})

    def ready_count(self) -> int:
        return sum(1 for s in self.slots
                   if s.process is not None and s.process.is_alive()
                   and self.samples.ready(s.process.pid or 0))

    async def stop(self, grace_s: float) -> None:
        """SIGTERM everyone, wait up to ``grace_s`` for the batches to commit, then SIGKILL."""
        live = [s for s in self.slots if s.process is not None and s.process.is_alive()]
        for slot in live:
            os.kill(slot.process.pid, signal.SIGTERM)  # type: ignore[union-attr,arg-type]
        deadline = time.monotonic() + grace_s
        while any(s.process.is_alive() for s in live) and time.monotonic() < deadline:
            for slot in live:  # keep reading: a worker blocked on a full pipe cannot exit
                if slot.conn is not None:
                    drain(slot.conn, self.samples)
            await asyncio.sleep(0.05)
        for slot in live:
            proc = slot.process
            assert proc is not None
            if proc.is_alive():
                log.warning("worker did not stop in time, killing", extra={"pid": proc.pid})
                proc.kill()
            proc.join(timeout=5)
            if slot.conn is not None:
                drain(slot.conn, self.samples)  # its final totals
                slot.conn.close()
            self.samples.retire(proc.pid or 0)
            slot.process, slot.conn = None, None


# ---------------------------------------------------------------------- HTTP

@dataclass
class State:
    registry: CollectorRegistry
    pool: Pool
    redis_ok: bool = False


STATE = web.AppKey("processing_state", State)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers and at least one worker has its rules loaded."""
    state = request.app[STATE]
    workers = state.pool.ready_count()
    ok = state.redis_ok and workers > 0
    body = {"ready": ok, "redis": state.redis_ok, "workers_ready": workers,
            "workers": len(state.pool.slots)}
    return web.json_response(body, status=200 if ok else 503)


def make_app(state: State) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


# ---------------------------------------------------------------------- role


async def _poll_backlog(consumer: GroupConsumer, state: State,
                        metrics: ProcessingQueueMetrics) -> None:
    try:
        lag, pending = await consumer.backlog()
    except (RedisError, OSError):
        state.redis_ok = False
    else:
        state.redis_ok = True
        metrics.lag.set(lag)
        metrics.pending.set(pending)
    metrics.redis_up.set(1 if state.redis_ok else 0)


@contextlib.asynccontextmanager
async def _listening(app: web.Application, listen: str) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_listen("processing.metrics_listen", listen)
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()


async def serve(cfg: NodeConfig, stop: asyncio.Event, *,
                analyzer_factory: AnalyzerFactory | None = None) -> None:
    """Run the worker processes and the metrics listener until ``stop`` is set."""
    _warn_on_early_reclaim(cfg)
    registry = CollectorRegistry()
    metrics = ProcessingQueueMetrics(registry)
    samples = WorkerSamples()
    registry.register(samples)
    pool = Pool(cfg, analyzer_factory, samples, metrics)
    state = State(registry, pool)
    redis: aioredis.Redis = redis_client(cfg.redis, max_connections=4)
    keys = Keys(cfg.redis.prefix)
    backlog = GroupConsumer(redis, keys.requests, PROCESSING_GROUP, "supervisor")
    try:
        async with _listening(make_app(state), cfg.processing.metrics_listen):
            try:
                await _supervise(pool, backlog, state, stop)
            finally:
                await pool.stop(cfg.processing.shutdown_grace_s)
    finally:
        await redis.aclose()


def _warn_on_early_reclaim(cfg: NodeConfig) -> None:
    # Entries are reclaimed by idle time alone: with a shorter idle time than the stuck-record
    # timeout, a slow record's entry is taken from its living worker by another one, which
    # then hangs too, and each theft counts as a delivery towards the dead letter.
    proc = cfg.processing
    if proc.claim_idle_ms <= proc.record_timeout_s * 1000:
        log.warning("processing.claim_idle_ms is not above processing.record_timeout_s: "
                    "entries of a worker busy on a slow record can be reclaimed by another",
                    extra={"claim_idle_ms": proc.claim_idle_ms,
                           "record_timeout_s": proc.record_timeout_s})


async def _supervise(pool: Pool, backlog: GroupConsumer, state: State,
                     stop: asyncio.Event) -> None:
    while not stop.is_set():
        pool.tick()
        await _poll_backlog(backlog, state, pool.metrics)
        try:
            await asyncio.wait_for(stop.wait(), timeout=TICK_S)
        except TimeoutError:
            pass
