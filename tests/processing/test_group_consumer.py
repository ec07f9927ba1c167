"""GroupConsumer against a real Redis: reading, reclaiming, dead-lettering."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from node.queue.consumer import GroupConsumer, decode_batch, pack_batch
from node.queue.keys import (
    DEAD_DELIVERIES_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_SOURCE_ID_FIELD,
    ENTRY_FIELD,
    Keys,
)


def consumer(redis, prefix: str, name: str, **kw) -> GroupConsumer:
    keys = Keys(prefix)
    opts = {"batch_entries": 10, "block_ms": 50, "claim_idle_ms": 100, "max_deliveries": 3}
    opts.update(kw)
    return GroupConsumer(redis, keys.requests, "processing", name, dead_stream=keys.requests_dead,
                         counters_key=keys.counters, **opts)


async def add(redis, prefix: str, items: list) -> bytes:
    return await redis.xadd(Keys(prefix).requests, {ENTRY_FIELD: pack_batch(items)})


async def test_ensure_group_is_idempotent(redis, prefix):
    c = consumer(redis, prefix, "w1")
    await c.ensure_group()
    await c.ensure_group()
    assert await c.read() == []


async def test_read_decodes_items_keeping_bytes_and_str(redis, prefix):
    c = consumer(redis, prefix, "w1")
    await c.ensure_group()
    items = [{"id": "a", "path": "/x", "body": b"\xff\x00", 1: "int key"}]
    eid = await add(redis, prefix, items)
    [entry] = await c.read()
    assert (entry.id, entry.items, entry.deliveries) == (eid, items, 1)
    assert await c.backlog() == (0, 1)
    assert await c.ack([entry.id]) == 1
    assert await c.backlog() == (0, 0)


async def test_entries_of_a_dead_member_are_reclaimed_with_delivery_count(redis, prefix):
    dead, live = consumer(redis, prefix, "dead"), consumer(redis, prefix, "live")
    await dead.ensure_group()
    eid = await add(redis, prefix, [{"id": "r1"}])
    assert [e.id for e in await dead.read()] == [eid]
    assert await live.read() == []  # not idle long enough yet
    await asyncio.sleep(0.15)
    live._next_claim_at = 0.0
    [entry] = await live.read()
    assert (entry.id, entry.deliveries, entry.items) == (eid, 2, [{"id": "r1"}])


async def test_departed_members_are_pruned_once_nothing_is_pending(redis, prefix):
    # Idle thresholds are floors (10x claim_idle_ms / block_ms): keep both tiny here.
    opts = {"claim_idle_ms": 1, "block_ms": 1, "prune_idle_ms": 30}
    gone, holding, live = (consumer(redis, prefix, n, **opts) for n in ("gone", "holding", "live"))
    await live.ensure_group()
    await add(redis, prefix, [{"id": "r1"}])
    [entry] = await gone.read()
    await gone.ack([entry.id])
    await add(redis, prefix, [{"id": "r2"}])
    assert len(await holding.read()) == 1  # left pending: it must be reclaimed first
    await asyncio.sleep(0.1)
    assert await live.prune_consumers() == ["gone"]
    names = {i["name"] for i in await redis.xinfo_consumers(Keys(prefix).requests, "processing")}
    assert names == {b"holding"}  # "live" has not read yet: it is no member so far


async def test_recently_active_members_are_kept(redis, prefix):
    a, b = consumer(redis, prefix, "a"), consumer(redis, prefix, "b")
    await a.ensure_group()
    await add(redis, prefix, [{"id": "r1"}])
    [entry] = await a.read()
    await a.ack([entry.id])
    assert await b.prune_consumers() == []  # idle far below the default hour


BAD_ENTRIES = [
    ("not msgpack", {ENTRY_FIELD: b"\xc1\xc1"}, "undecodable"),
    ("not an array", {ENTRY_FIELD: msgpack.packb({"a": 1})}, "undecodable"),
    ("array of non-maps", {ENTRY_FIELD: msgpack.packb([1, 2])}, "undecodable"),
    ("invalid utf-8 str", {ENTRY_FIELD: b"\x91\x81\xa1a\xa2\xff\xfe"}, "undecodable"),
    ("no batch field", {b"other": b"x"}, "no batch field"),
]


@pytest.mark.parametrize("fields,error", [b[1:] for b in BAD_ENTRIES],
                         ids=[b[0] for b in BAD_ENTRIES])
async def test_undecodable_entries_go_straight_to_dead_letter(redis, prefix, fields, error):
    keys = Keys(prefix)
    c = consumer(redis, prefix, "w1")
    await c.ensure_group()
    bad = await redis.xadd(keys.requests, fields)
    good = await add(redis, prefix, [{"id": "ok"}])
    assert [e.id for e in await c.read()] == [good]
    [(_, dead)] = await redis.xrange(keys.requests_dead)
    assert error in dead[DEAD_ERROR_FIELD].decode()
    assert dead[DEAD_SOURCE_ID_FIELD] == bad
    assert dead[ENTRY_FIELD] == fields.get(ENTRY_FIELD, b"")
    assert await redis.hget(keys.counters, "dead_letters") == b"1"
    assert await c.backlog() == (0, 1)  # only the good one is pending


async def test_entry_delivered_too_often_is_dead_lettered_not_handed_out(redis, prefix):
    keys = Keys(prefix)
    c = consumer(redis, prefix, "w1", max_deliveries=2)
    await c.ensure_group()
    eid = await add(redis, prefix, [{"id": "poison"}])
    seen = []
    for _ in range(6):  # bounded: read, never ack, wait for it to become reclaimable
        seen += [e.deliveries for e in await c.read()]
        await asyncio.sleep(0.12)
        c._next_claim_at = 0.0
    assert seen == [1, 2]
    [(_, dead)] = await redis.xrange(keys.requests_dead)
    assert (dead[DEAD_SOURCE_ID_FIELD], dead[DEAD_DELIVERIES_FIELD]) == (eid, b"3")
    assert decode_batch(dead[ENTRY_FIELD]) == [{"id": "poison"}]
    assert await c.backlog() == (0, 0)


async def test_dead_letter_is_atomic_and_capped(redis, prefix):
    keys = Keys(prefix)
    c = consumer(redis, prefix, "w1")
    await c.ensure_group()
    await add(redis, prefix, [{"id": "x"}])
    [entry] = await c.read()
    await c.dead_letter(entry, "boom " * 1000)
    [(_, dead)] = await redis.xrange(keys.requests_dead)
    assert len(dead[DEAD_ERROR_FIELD]) <= 1000
    assert await c.backlog() == (0, 0)


async def test_read_recreates_a_deleted_group(redis, prefix):
    c = consumer(redis, prefix, "w1")
    await c.ensure_group()
    await redis.delete(Keys(prefix).requests)
    assert await c.read() == []
    eid = await add(redis, prefix, [{"id": "after"}])
    assert [e.id for e in await c.read()] == [eid]


async def test_entry_trimmed_while_pending_is_dropped_on_reclaim(redis, prefix):
    dead, live = consumer(redis, prefix, "dead"), consumer(redis, prefix, "live")
    await dead.ensure_group()
    eid = await add(redis, prefix, [{"id": "gone"}])
    assert [e.id for e in await dead.read()] == [eid]
    await redis.xdel(Keys(prefix).requests, eid)  # what MAXLEN trimming does
    await asyncio.sleep(0.15)
    assert await live.read() == []
    assert await live.backlog() == (0, 0)
