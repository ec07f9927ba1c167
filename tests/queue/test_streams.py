"""StreamWriter against a real Redis: packing, counters, interval flush, bounds, high water,
outages (a private server killed and restarted on the same data dir)."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import pytest
from prometheus_client import CollectorRegistry

from node.metrics import ReceiverMetrics
from node.queue.connection import redis_client
from node.queue.keys import ENTRY_FIELD, PROCESSING_GROUP, Keys
from node.queue.streams import StreamWriter, read_depth


def rec(i: int, source: str = "mirror", body: int = 10) -> dict:
    return {"v": 1, "id": f"r{i:06d}", "source": source, "body": b"x" * body}


def packed(records: list[dict]) -> tuple[list[bytes], list[str], int]:
    items = [msgpack.packb(r, use_bin_type=True) for r in records]
    return items, [r["source"] for r in records], sum(map(len, items))


def offer_singles(writer, records: list[dict]) -> str | None:
    """``offer_runs`` with one record per run."""
    items, sources, size = packed(records)
    return writer.offer_runs(items, [1] * len(items), sources, size)


@contextlib.asynccontextmanager
async def running_writer(cfg, redis=None):
    registry = CollectorRegistry()
    client = redis or redis_client(cfg.redis)
    writer = StreamWriter(client, Keys(cfg.redis.prefix), cfg.queue, ReceiverMetrics(registry))
    task = asyncio.create_task(writer.run())
    try:
        yield writer, registry
    finally:
        await writer.close(timeout_s=2)
        await asyncio.wait_for(task, 5)
        await client.aclose()


async def entries_of(redis, stream: str) -> list[list[dict]]:
    return [msgpack.unpackb(fields[ENTRY_FIELD], raw=False)
            for _, fields in await redis.xrange(stream)]


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_packs_records_and_counts(make_config, redis):
    cfg = make_config(queue__records_per_entry=10)
    keys = Keys(cfg.redis.prefix)
    async with running_writer(cfg) as (writer, registry):
        for i in range(25):
            assert writer.offer(rec(i, "mirror" if i % 5 else "lua")) is None

        async def all_written():
            return sum(len(e) for e in await entries_of(redis, keys.requests)) == 25
        await wait_until(all_written)
    entries = await entries_of(redis, keys.requests)
    assert [r["id"] for e in entries for r in e] == [f"r{i:06d}" for i in range(25)]
    assert max(len(e) for e in entries) == 10
    assert await redis.hget(keys.counters, "records") == b"25"
    assert await redis.hgetall(keys.records_by_source) == {b"mirror": b"20", b"lua": b"5"}
    assert sample(registry, "oob_records_enqueued_total") == 25


async def test_single_record_flushed_by_interval(make_config, redis):
    cfg = make_config(queue__records_per_entry=1000, queue__flush_interval_ms=20)
    async with running_writer(cfg) as (writer, registry):
        writer.offer(rec(1))

        async def written():
            return await redis.xlen(Keys(cfg.redis.prefix).requests) == 1
        await wait_until(written)
        assert sample(registry, "oob_enqueue_latency_seconds_count") == 1


async def test_high_water_sheds(make_config, redis):
    cfg = make_config(queue__high_water=5, queue__records_per_entry=1,
                      queue__depth_interval_ms=10)
    keys = Keys(cfg.redis.prefix)
    async with running_writer(cfg) as (writer, registry):
        for i in range(8):
            writer.offer(rec(i))

        async def queued():
            return await redis.xlen(keys.requests) == 8
        await wait_until(queued)
        await writer.refresh_depth()  # no group yet: XLEN is the backlog
        assert writer.over_high_water and writer.depth_records == 8
        assert writer.offer(rec(99)) == "high_water"
        assert sample(registry, "oob_requests_shed_total", reason="high_water") == 1
        # Once a group has read everything (lag 0, pending acked), shedding stops.
        await redis.xgroup_create(keys.requests, PROCESSING_GROUP, id="$")
        await writer.refresh_depth()
        assert not writer.over_high_water
        assert writer.offer(rec(100)) is None


async def test_depth_counts_lag_and_pending(make_config, redis):
    cfg = make_config()
    keys = Keys(cfg.redis.prefix)
    for i in range(6):
        await redis.xadd(keys.requests, {ENTRY_FIELD: msgpack.packb([rec(i)])})
    await redis.xgroup_create(keys.requests, PROCESSING_GROUP, id="0")
    await redis.xreadgroup(PROCESSING_GROUP, "c1", {keys.requests: ">"}, count=2)
    depth = await read_depth(redis, keys.requests)
    assert (depth.length, depth.lag, depth.pending, depth.group) == (6, 4, 2, True)


@pytest.mark.parametrize("limit_kind", ["records", "bytes"])
async def test_buffer_bound_sheds(make_config, redis, limit_kind):
    cfg = make_config(queue__max_buffered_records=10, queue__max_buffered_bytes=65536,
                      queue__flush_interval_ms=5000, queue__records_per_entry=1000)
    async with running_writer(cfg) as (writer, registry):
        body = 10 if limit_kind == "records" else 65536 // 4 - 100
        accepted = [writer.offer(rec(i, body=body)) for i in range(12)]
        expected_ok = 10 if limit_kind == "records" else 4
        assert accepted.count(None) == expected_ok
        assert set(accepted) - {None} == {"buffer_full"}
        assert sample(registry, "oob_requests_shed_total", reason="buffer_full") == 12 - expected_ok


async def test_offer_runs_of_single_records_is_all_or_nothing(make_config, redis):
    cfg = make_config(queue__max_buffered_records=10, queue__flush_interval_ms=5000,
                      queue__records_per_entry=1000)
    async with running_writer(cfg) as (writer, registry):
        assert offer_singles(writer, [rec(i) for i in range(8)]) is None
        assert offer_singles(writer, [rec(i) for i in range(3)]) == "buffer_full"
        assert writer.buffered == 8
        assert sample(registry, "oob_requests_shed_total", reason="buffer_full") == 3


async def test_outage_retains_sheds_and_resumes(make_config, own_redis_server):
    cfg = make_config(redis__url=own_redis_server.url, queue__max_buffered_records=50,
                      queue__records_per_entry=10, queue__depth_interval_ms=20)
    keys = Keys(cfg.redis.prefix)
    check = redis_client(cfg.redis)
    async with running_writer(cfg) as (writer, registry):
        own_redis_server.kill()
        results = []
        for i in range(80):
            results.append(writer.offer(rec(i)))
            await asyncio.sleep(0.002)
        assert not writer.redis_up
        shed = sum(r is not None for r in results)
        assert shed >= 30 and set(results) - {None} <= {"redis_down"}
        assert sample(registry, "oob_requests_shed_total", reason="redis_down") == shed
        assert sample(registry, "oob_redis_up") == 0
        own_redis_server.start()

        async def resumed():
            return writer.redis_up and writer.buffered == 0
        await wait_until(resumed, timeout=10)
        assert writer.offer(rec(1000)) is None

        async def all_in():
            ids = {r["id"] for e in await entries_of(check, keys.requests) for r in e}
            return len(ids) == 80 - shed + 1
        await wait_until(all_in)
    await check.aclose()


async def test_close_flushes_and_counts_what_cannot_be_written(make_config, own_redis_server):
    cfg = make_config(redis__url=own_redis_server.url, queue__flush_interval_ms=5000,
                      queue__records_per_entry=1000)
    async with running_writer(cfg) as (writer, registry):
        for i in range(5):
            writer.offer(rec(i))
        own_redis_server.kill()
    assert sample(registry, "oob_requests_shed_total", reason="redis_down") == 5
    own_redis_server.start()
    async with running_writer(cfg) as (writer, _):
        for i in range(5):
            writer.offer(rec(i))
    check = redis_client(cfg.redis)
    assert await check.xlen(Keys(cfg.redis.prefix).requests) == 1
    await check.aclose()


def run(records: list[dict]) -> bytes:
    return b"".join(msgpack.packb(r, use_bin_type=True) for r in records)


async def test_runs_are_written_whole_in_entries_of_at_most_records_per_entry(make_config,
                                                                                redis):
    cfg = make_config(queue__records_per_entry=5, queue__flush_interval_ms=5000)
    keys = Keys(cfg.redis.prefix)
    runs = [run([rec(i, "lua") for i in range(3)]),
            run([rec(3, "lua"), rec(4, "har"), rec(5, "lua")]), run([rec(6)])]
    async with running_writer(cfg) as (writer, registry):
        assert writer.offer_runs(runs, [3, 3, 1], [{"lua": 3}, {"lua": 2, "har": 1}, "mirror"],
                                 sum(map(len, runs))) is None

        async def all_written():
            return sum(len(e) for e in await entries_of(redis, keys.requests)) == 7
        await wait_until(all_written)
    entries = await entries_of(redis, keys.requests)
    assert [len(e) for e in entries] == [3, 4]  # 3 + 3 > 5: the second run starts an entry
    assert [r["id"] for e in entries for r in e] == [f"r{i:06d}" for i in range(7)]
    assert await redis.hget(keys.counters, "records") == b"7"
    assert await redis.hgetall(keys.records_by_source) == {b"lua": b"5", b"har": b"1",
                                                           b"mirror": b"1"}
    assert sample(registry, "oob_records_enqueued_total") == 7


async def test_offer_runs_is_all_or_nothing(make_config, redis):
    cfg = make_config(queue__max_buffered_records=10, queue__flush_interval_ms=5000,
                      queue__records_per_entry=1000)
    async with running_writer(cfg) as (writer, registry):
        eight = run([rec(i) for i in range(8)])
        assert writer.offer_runs([eight], [8], [{"mirror": 8}], len(eight)) is None
        three = run([rec(i) for i in range(3)])
        assert writer.offer_runs([three], [3], [{"mirror": 3}], len(three)) == "buffer_full"
        assert writer.buffered == 8
        assert sample(registry, "oob_requests_shed_total", reason="buffer_full") == 3


async def test_error_reply_drops_the_connection_and_the_batch_is_retried(make_config, redis):
    """An error reply first in the pipeline: the batch is kept and written whole once Redis
    accepts it, and no reply left unread is taken for a later pipeline's."""
    cfg = make_config(queue__records_per_entry=2)
    keys = Keys(cfg.redis.prefix)
    await redis.set(keys.requests, b"not a stream")  # every XADD answers WRONGTYPE
    client = redis_client(cfg.redis)
    writer = StreamWriter(client, keys, cfg.queue, ReceiverMetrics(CollectorRegistry()))
    for i in range(5):  # 3 XADDs and 2 HINCRBYs: 5 replies, the first one an error
        assert writer.offer(rec(i)) is None
    assert not await writer.flush()
    assert writer.buffered == 5 and not writer.redis_up
    await redis.delete(keys.requests)
    assert await writer.flush()  # the retained batch
    assert writer.offer(rec(5)) is None
    assert await writer.flush()
    assert writer.buffered == 0 and writer.redis_up
    entries = await entries_of(redis, keys.requests)
    assert [r["id"] for e in entries for r in e] == [f"r{i:06d}" for i in range(6)]
    await client.aclose()
