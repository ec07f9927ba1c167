"""The worker loop in-process against a real Redis, with an injected analyzer."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis
from proc_helpers import drained, fake_analyze, hits_in_stream, put, record, wait_for
from prometheus_client import CollectorRegistry

from node.metrics import ProcessingMetrics
from node.processing.worker import Worker, run_worker
from node.queue.consumer import decode_batch
from node.queue.keys import DEAD_ERROR_FIELD, DEAD_SOURCE_ID_FIELD, ENTRY_FIELD, Keys
from node.records import HIT_FIELDS, hit_id


@contextlib.asynccontextmanager
async def running(cfg, redis, analyze=fake_analyze, name="w1"):
    """A worker task for the test's duration; stopped (and awaited) at the end."""
    stop = asyncio.Event()
    metrics = ProcessingMetrics(CollectorRegistry())
    task = asyncio.create_task(run_worker(cfg, stop, analyze, consumer_name=name,
                                          metrics=metrics, redis=redis))
    try:
        yield task, metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def fast(make_config, **kw):
    base = {"processing.block_ms": 50, "processing.claim_idle_ms": 100,
            "processing.max_deliveries": 2}
    base.update(kw)
    return make_config(**base)


async def test_records_become_hits_and_entries_are_acked(make_config, redis, prefix):
    cfg = fast(make_config)
    records = [record(f"r{i}", query=f"q={'attack' if i % 2 else 'ok'}") for i in range(10)]
    await put(redis, prefix, records[:6])
    await put(redis, prefix, records[6:])
    async with running(cfg, redis) as (_, metrics):
        await wait_for(lambda: drained(redis, prefix))
    hits = await hits_in_stream(redis, prefix)
    expected = {hit_id(r["id"], "test-rule", ["query", "q"]) for r in records
                if "attack" in r["query"]}
    assert sorted(h["id"] for h in hits) == sorted(expected)
    # every hit field, plus the request facts the worker adds (query, fingerprint)
    assert all(set(h) == set(HIT_FIELDS) | {"query", "fingerprint"} for h in hits)
    assert {h["application"] for h in hits} == {"shop.example"}
    assert await redis.hget(Keys(prefix).counters, "hits") == str(len(expected)).encode()
    assert metrics.records._value.get() == len(records)
    assert metrics.hits.labels("sqli")._value.get() == len(expected)


APPLICATIONS = [
    ({}, "Shop.Example:8080", "shop.example"),
    ({"shop": ["*.shop.example", "shop.example"]}, "api.shop.example", "shop"),
    ({"shop": ["*.shop.example"]}, "other.example", "other.example"),
    ({"a": ["x.*"], "b": ["x.example"]}, "x.example", "a"),  # first match in config order
]


@pytest.mark.parametrize("applications,host,expected", APPLICATIONS)
async def test_application_comes_from_host_patterns(make_config, redis, prefix, applications,
                                                    host, expected):
    cfg = fast(make_config, **{"aggregation.applications": applications})
    await put(redis, prefix, [record("r1", query="q=attack", host=host)])
    async with running(cfg, redis):
        await wait_for(lambda: drained(redis, prefix))
    [hit] = await hits_in_stream(redis, prefix)
    assert hit["application"] == expected


async def test_failing_record_is_dead_lettered_after_max_deliveries(make_config, redis, prefix):
    cfg = fast(make_config)
    keys = Keys(prefix)
    poison = await put(redis, prefix, [record("p0", query="q=attack"),
                                       record("p1", path="/poison")])
    await put(redis, prefix, [record("g0", query="q=attack")])
    garbage = await redis.xadd(keys.requests, {ENTRY_FIELD: b"\xc1 not msgpack"})
    async with running(cfg, redis) as (task, metrics):
        await wait_for(lambda: _dead_count(redis, prefix, 2))
        await wait_for(lambda: drained(redis, prefix))
        assert not task.done()  # the worker goes on
        await put(redis, prefix, [record("after", query="q=attack")])
        await wait_for(lambda: drained(redis, prefix))
    dead_entries = {f[DEAD_SOURCE_ID_FIELD]: f for _, f in await redis.xrange(keys.requests_dead)}
    assert set(dead_entries) == {poison, garbage}
    assert dead_entries[garbage][DEAD_ERROR_FIELD].startswith(b"undecodable entry")
    dead = dead_entries[poison]
    assert b"RuntimeError: poisoned record <script>" in dead[DEAD_ERROR_FIELD]
    assert b"record 1 (p1)" in dead[DEAD_ERROR_FIELD]
    assert [r["id"] for r in decode_batch(dead[ENTRY_FIELD])] == ["p0", "p1"]
    hits = await hits_in_stream(redis, prefix)
    # p0's hit is emitted once (with the dead letter), not once per delivery.
    assert sorted(h["record_id"] for h in hits) == ["after", "g0", "p0"]
    assert await redis.hget(keys.counters, "dead_letters") == b"2"
    assert await redis.hget(keys.counters, "hits") == b"3"
    assert metrics.errors.labels("analyze")._value.get() == cfg.processing.max_deliveries
    assert metrics.dead_letters._value.get() == 2


async def _dead_count(redis, prefix, n) -> bool:
    return await redis.xlen(Keys(prefix).requests_dead) >= n


@pytest.mark.parametrize("poisoned", [False, True])
async def test_a_slow_worker_committing_after_the_reclaimer_writes_nothing(
        make_config, redis, prefix, poisoned):
    # Worker "slow" analyzes an entry but commits only after claim_idle_ms, when "fast" has
    # reclaimed the same entry and committed it (poisoned: dead-lettered it, as delivered
    # too often): the entry's hits and dead letter are written and counted once.
    cfg = fast(make_config, **{"processing.max_deliveries": 1 if poisoned else 5})
    keys = Keys(prefix)
    records = [record("s0", query="q=attack"), record("s1", query="q=attack")]
    if poisoned:
        records.append(record("s2", path="/poison"))
    await put(redis, prefix, records)
    slow, fast_worker = (Worker(cfg, redis, fake_analyze, ProcessingMetrics(CollectorRegistry()),
                                name) for name in ("slow", "fast"))
    await slow.consumer.ensure_group()
    entries = await slow.consumer.read()
    late = slow.analyze_batch(entries, None)
    assert [bool(done.error) for done in late] == [poisoned]
    await asyncio.sleep(cfg.processing.claim_idle_ms / 1000 * 2)
    await fast_worker.step()  # reclaims it
    assert await drained(redis, prefix)
    assert await slow.commit(late) == []  # too late: nothing committed
    hits = await hits_in_stream(redis, prefix)
    assert sorted(h["record_id"] for h in hits) == ([] if poisoned else ["s0", "s1"])
    assert await redis.hget(keys.counters, "hits") == (None if poisoned else b"2")
    assert await redis.xlen(keys.requests_dead) == (1 if poisoned else 0)
    assert await redis.hget(keys.counters, "dead_letters") == (b"1" if poisoned else None)


async def test_worker_survives_redis_errors_and_recreates_the_group(make_config, redis, prefix):
    cfg = fast(make_config)
    async with running(cfg, redis) as (task, metrics):
        await wait_for(lambda: redis.exists(Keys(prefix).requests))
        await redis.delete(Keys(prefix).requests)  # NOGROUP on the next read
        await put(redis, prefix, [record("r1", query="q=attack")])
        await wait_for(lambda: drained(redis, prefix))
        assert not task.done()
    # The entry added before the group was recreated is read too (group id 0).
    assert [h["record_id"] for h in await hits_in_stream(redis, prefix)] == ["r1"]


async def test_worker_rides_out_a_redis_outage(make_config, own_redis_server, prefix):
    cfg = fast(make_config, **{"redis.url": own_redis_server.url})
    client = aioredis.Redis.from_url(own_redis_server.url)
    stop = asyncio.Event()
    metrics = ProcessingMetrics(CollectorRegistry())
    # The worker makes its own client (redis=None), as in production.
    task = asyncio.create_task(run_worker(cfg, stop, fake_analyze, consumer_name="w1",
                                          metrics=metrics))
    try:
        await put(client, prefix, [record("before", query="q=attack")])
        await wait_for(lambda: drained(client, prefix))
        own_redis_server.kill()
        await wait_for(lambda: _redis_errors(metrics))
        own_redis_server.start()
        await put(client, prefix, [record("after", query="q=attack")])
        await wait_for(lambda: drained(client, prefix), timeout=30)
        assert not task.done()
        ids = {h["record_id"] for h in await hits_in_stream(client, prefix)}
        assert "after" in ids
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await client.aclose()


async def _redis_errors(metrics) -> bool:
    return metrics.errors.labels("redis")._value.get() > 0
