"""The processing role: N worker processes, restart on death, summed /metrics, stop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from pathlib import Path

import aiohttp
from proc_helpers import (
    GO_MARK,
    drained,
    fake_factory,
    free_port,
    gated_factory,
    hanging_factory,
    hits_in_stream,
    put,
    record,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from node.processing.supervisor import serve
from node.queue.keys import DEAD_ERROR_FIELD, DEAD_SOURCE_ID_FIELD, Keys


def workers() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("oob-processing")]


async def scrape(session, url) -> dict[tuple[str, tuple], float]:
    async with session.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def status(session, url, path) -> int:
    async with session.get(url + path) as resp:
        return resp.status


async def test_supervisor_runs_restarts_and_stops_workers(make_config, redis, prefix):
    port = free_port()
    cfg = make_config(**{"processing.workers": 2, "processing.block_ms": 50,
                         "processing.claim_idle_ms": 100, "processing.shutdown_grace_s": 10,
                         "processing.metrics_listen": f"127.0.0.1:{port}"})
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    role = asyncio.create_task(serve(cfg, stop, analyzer_factory=fake_factory))
    records = [record(f"r{i}", query="q=attack" if i % 2 else "q=no") for i in range(40)]
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _ready(session, url), timeout=60)
            assert await status(session, url, "/healthz") == 200
            # Slot 0 loads first (warms the rule cache), then the others start.
            await wait_for(lambda: _metric(session, url, "oob_processing_workers", 2), 60)
            assert len(workers()) == 2
            for i in range(0, 40, 10):
                await put(redis, prefix, records[i:i + 10])
            await wait_for(lambda: drained(redis, prefix), timeout=60)
            await wait_for(lambda: _metric(session, url, "oob_processing_records_total", 40))
            got = await scrape(session, url)
            assert got[("oob_processing_hits_total", (("class", "sqli"),))] == 20
            assert got[("oob_processing_scan_seconds_count", ())] == 40
            assert got[("oob_processing_queue_pending_entries", ())] == 0

            victim = workers()[0]
            os.kill(victim.pid, signal.SIGKILL)
            await wait_for(lambda: _metric(session, url, "oob_processing_worker_restarts_total",
                                           1))
            await wait_for(lambda: _metric(session, url, "oob_processing_workers", 2), 60)
            assert victim.pid not in [p.pid for p in workers()]
            # Counters survive the death of the worker that counted them.
            got = await scrape(session, url)
            assert got[("oob_processing_records_total", ())] == 40
    finally:
        stop.set()
        await asyncio.wait_for(role, timeout=30)
    assert workers() == []


async def _ready(session, url) -> bool:
    try:
        return await status(session, url, "/readyz") == 200
    except aiohttp.ClientError:
        return False


async def _metric(session, url, name, value) -> bool:
    return (await scrape(session, url)).get((name, ())) == value


async def test_a_record_that_hangs_workers_is_dead_lettered_alone(make_config, redis, prefix):
    port = free_port()
    # The entry is reclaimed (1.5 s) well after its stuck worker is killed (0.5 s): a shorter
    # idle time lets a second worker take it from the living first one (the warned-about
    # configuration), and the dead letter can then come before the second kill.
    cfg = make_config(**{"processing.workers": 2, "processing.block_ms": 50,
                         "processing.claim_idle_ms": 1500, "processing.max_deliveries": 2,
                         "processing.batch_entries": 4, "processing.record_timeout_s": 0.5,
                         "processing.metrics_listen": f"127.0.0.1:{port}"})
    keys = Keys(prefix)
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    role = asyncio.create_task(serve(cfg, stop, analyzer_factory=hanging_factory))
    innocent = [[record(f"g{e}{i}", query="q=attack") for i in range(3)] for e in range(3)]
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _ready(session, url), timeout=60)
            await put(redis, prefix, innocent[0])
            poison = await put(redis, prefix, [record("h0", query="q=attack"),
                                               record("hang", path="/hang")])
            for batch in innocent[1:]:
                await put(redis, prefix, batch)
            await wait_for(lambda: _dead_and_drained(redis, prefix), timeout=120)
            got = await scrape(session, url)
    finally:
        stop.set()
        await asyncio.wait_for(role, timeout=30)
    [(_, dead)] = await redis.xrange(keys.requests_dead)
    assert dead[DEAD_SOURCE_ID_FIELD] == poison
    assert b"delivered 3 times without an ack" in dead[DEAD_ERROR_FIELD]
    ids = [h["record_id"] for h in await hits_in_stream(redis, prefix)]
    assert sorted(ids) == sorted(r["id"] for batch in innocent for r in batch)  # each once
    assert got[("oob_processing_stuck_workers_killed_total", ())] == cfg.processing.max_deliveries


async def _dead_and_drained(redis, prefix) -> bool:
    return await redis.xlen(Keys(prefix).requests_dead) == 1 and await drained(redis, prefix)


async def test_other_workers_start_once_the_first_has_loaded_the_rules(make_config, tmp_path):
    port = free_port()
    cfg = make_config(**{"processing.workers": 3, "processing.block_ms": 50,
                         "processing.metrics_listen": f"127.0.0.1:{port}"})
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    role = asyncio.create_task(serve(cfg, stop, analyzer_factory=gated_factory))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _answers(session, url), timeout=30)
            for _ in range(10):  # several supervisor ticks while the first is still loading
                await asyncio.sleep(0.2)
                assert len(workers()) == 1
            assert await status(session, url, "/readyz") == 503
            (Path(cfg.data_dir) / GO_MARK).touch()
            await wait_for(lambda: _metric(session, url, "oob_processing_workers", 3), 60)
            assert await status(session, url, "/readyz") == 200
    finally:
        stop.set()
        await asyncio.wait_for(role, timeout=30)


async def _answers(session, url) -> bool:
    try:
        return await status(session, url, "/healthz") == 200
    except aiohttp.ClientError:
        return False
