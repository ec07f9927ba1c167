"""Reads behind the API: filtered pages of attacks and hits, stats, the timeline.

Lists scan an index (newest first) a chunk at a time, fetch the documents of that chunk in
one MGET and keep those matching every filter. One call scans at most ``budget`` index
entries: with a selective filter over a large store a page may come back short (even empty)
with a ``next`` cursor; clients keep following ``next`` until it is null.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from node.aggregation.paging import Position, encode_cursor, scan
from node.aggregation.store import ATTACKS_FIELD, AttackStore
from node.queue.keys import AGGREGATION_GROUP, PROCESSING_GROUP, Keys

Doc = dict[str, Any]
Predicate = Callable[[Doc], bool]
LAG_COUNT_CAP = 100000  # when Redis cannot tell the lag, count at most this many entries


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Doc]
    next: str | None


@dataclass(frozen=True, slots=True)
class Window:
    """Where a list scan runs: score bounds, the cursor position, the direction."""

    lo: float = -math.inf
    hi: float = math.inf
    after: Position | None = None
    desc: bool = True


async def scan_docs(store: AttackStore, index: str, key_of: Callable[[str], str],
                    window: Window, chunk: int = 200
                    ) -> AsyncIterator[tuple[Position, Doc | None]]:
    """(position, document) along ``index``; documents read ``chunk`` at a time."""
    pending: list[tuple[float, str]] = []
    async with contextlib.aclosing(scan(store.redis, index, lo=window.lo, hi=window.hi,
                                        after=window.after, desc=window.desc,
                                        chunk=chunk)) as members:
        async for member, score in members:
            pending.append((score, member))
            if len(pending) >= chunk:
                for item in await _fetch(store, key_of, pending):
                    yield item
                pending = []
    for item in await _fetch(store, key_of, pending):
        yield item


async def _fetch(store: AttackStore, key_of: Callable[[str], str],
                 positions: list[tuple[float, str]]) -> list[tuple[Position, Doc | None]]:
    docs = await store.get_json([key_of(member) for _, member in positions])
    return list(zip(positions, docs, strict=True))


async def filtered_page(store: AttackStore, index: str, key_of: Callable[[str], str],
                        predicate: Predicate, window: Window, limit: int,
                        budget: int) -> Page:
    items: list[Doc] = []
    last: Position | None = None
    scanned = 0
    chunk = min(max(limit, 50), 500)
    async with contextlib.aclosing(scan_docs(store, index, key_of, window, chunk)) as docs:
        async for position, doc in docs:
            scanned += 1
            last = position
            if doc is not None and predicate(doc):
                items.append(doc)
            if len(items) >= limit or scanned >= budget:
                return Page(items, encode_cursor(last))
    return Page(items, None)


def matches(filters: dict[str, Any]) -> Predicate:
    """Every given filter (field -> wanted value) must hold."""
    wanted = {k: v for k, v in filters.items() if v not in (None, "")}

    def check(doc: Doc) -> bool:
        return all(doc.get(k) == v for k, v in wanted.items())

    return check


# ---------------------------------------------------------------------- stats

async def _group_backlog(redis: aioredis.Redis, stream: str, group: str) -> dict[str, int]:
    length = int(await redis.xlen(stream))
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream yet
        return {"length": length, "pending": 0, "lag": 0}
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell after trimming: count what is left, capped
                last = info.get("last-delivered-id")
                last = last.decode() if isinstance(last, bytes) else str(last)
                lag = len(await redis.xrange(stream, min="(" + last, count=LAG_COUNT_CAP))
            return {"length": length, "pending": int(info.get("pending") or 0),
                    "lag": int(lag)}
    return {"length": length, "pending": 0, "lag": length}


def _int_hash(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode("utf-8", "replace"): int(v) for k, v in sorted(raw.items())}


async def stats(redis: aioredis.Redis, keys: Keys) -> Doc:
    counters = _int_hash(await redis.hgetall(keys.counters))
    by_class = _int_hash(await redis.hgetall(keys.hits_by_class))
    by_source = _int_hash(await redis.hgetall(keys.records_by_source))
    totals = {name: counters.get(name, 0) for name in ("records", "hits", "dead_letters",
                                                        "dropped")}
    totals["attacks"] = counters.get(ATTACKS_FIELD, 0)
    totals["hits_counted"] = sum(by_class.values())
    totals["attacks_kept"] = int(await redis.zcard(keys.attacks_index))
    return {
        "queues": {
            "requests": await _group_backlog(redis, keys.requests, PROCESSING_GROUP),
            "hits": await _group_backlog(redis, keys.hits, AGGREGATION_GROUP),
        },
        "totals": totals,
        "hits_by_class": by_class,
        "records_by_source": by_source,
    }


# ---------------------------------------------------------------------- timeline

async def timeline(redis: aioredis.Redis, keys: Keys, since: float, until: float,
                   bucket: int) -> Doc:
    """Hit counts by class per ``bucket`` seconds (a multiple of 60) from per-minute hashes."""
    first, last = int(since // 60), int(until // 60)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in range(first, last + 1):
            pipe.hgetall(keys.timeline(minute))
        minutes = await pipe.execute()
    start = int(since // bucket) * bucket
    points: dict[int, dict[str, int]] = {
        ts: {} for ts in range(start, last * 60 + 1, bucket)}
    for minute, counts in zip(range(first, last + 1), minutes, strict=True):
        slot = points.setdefault((minute * 60 // bucket) * bucket, {})
        for cls, n in counts.items():
            name = cls.decode("utf-8", "replace")
            slot[name] = slot.get(name, 0) + int(n)
    return {"bucket": bucket,
            "points": [{"ts": ts, "counts": points[ts]} for ts in sorted(points)]}
