"""Retention keeps Redis memory bounded: hits and attacks beyond max_hits/max_attacks or older
than retention_s are deleted with their documents; the idempotency set is trimmed too."""

from __future__ import annotations

from agg_helpers import T0, make_hit

from node.aggregation.store import AttackStore
from node.queue.keys import Keys


def store_of(cfg, redis) -> AttackStore:
    return AttackStore(redis, Keys(cfg.redis.prefix), cfg.aggregation)


async def keys_matching(redis, pattern: str) -> int:
    return len([k async for k in redis.scan_iter(match=pattern, count=1000)])


async def test_count_limits(make_config, redis):
    cfg = make_config(aggregation__max_hits=100, aggregation__max_attacks=10)
    store = store_of(cfg, redis)
    hits = [make_hit(f"c{i}", ts=T0 + i, ip=f"10.0.0.{i // 10 + 1}") for i in range(150)]
    await store.apply(hits, now=T0 + 200)
    assert await redis.zcard(store.keys.attacks_index) == 15
    deleted = await store.trim(now=T0 + 200)
    assert deleted == (50, 5)
    prefix = cfg.redis.prefix
    assert await redis.zcard(store.keys.hits_index) == 100
    assert await keys_matching(redis, f"{prefix}:hit:*") == 100
    assert await keys_matching(redis, f"{prefix}:attack:*") == 10
    kept = {m.decode() for m in await redis.zrange(store.keys.hits_index, 0, -1)}
    assert kept == {h["id"] for h in hits[50:]}  # the newest are kept
    assert await redis.zcard(store.keys.seen_hits) <= 100
    assert await redis.hlen(store.keys.attack_groups) == 10


async def test_age_limit(make_config, redis):
    cfg = make_config(aggregation__retention_s=3600)
    store = store_of(cfg, redis)
    old = [make_hit(f"o{i}", ts=T0 + i, ip="10.1.1.1") for i in range(5)]
    new = [make_hit(f"n{i}", ts=T0 + 7200 + i, ip="10.2.2.2") for i in range(5)]
    await store.apply(old + new, now=T0 + 7300)
    assert await store.trim(now=T0 + 7300) == (5, 1)
    ids = [m.decode() for m in await redis.zrange(store.keys.attacks_index, 0, -1)]
    (attack,) = await store.get_json([store.keys.attack(i) for i in ids])
    assert attack["client_ip"] == "10.2.2.2"
    assert await redis.zcard(store.keys.hits_index) == 5
    assert await store.trim(now=T0 + 7300) == (0, 0)


async def test_a_trimmed_attack_is_not_resurrected_by_its_group(make_config, redis):
    cfg = make_config(aggregation__retention_s=3600)
    store = store_of(cfg, redis)
    await store.apply([make_hit("g1", ts=T0)], now=T0)
    await store.trim(now=T0 + 7200)
    applied = await store.apply([make_hit("g2", ts=T0 + 7200)], now=T0 + 7200)
    (attack,) = applied.result.attacks.values()
    assert applied.result.created == [attack["id"]] and attack["hits"] == 1
