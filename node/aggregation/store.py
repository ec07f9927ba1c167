"""Attacks and hits in Redis: where aggregation keeps what the API, console and exports read.

Layout (every key from node/queue/keys.py):
- ``attack:<id>``: one attack as JSON (records.Attack plus internal ``_`` state);
  ``attacks``: sorted set id -> last_seen (the list, newest first);
  ``attack-groups``: hash group digest (class, client, host, app) -> its open attack's id.
- ``hit:<id>``: one hit as stored (redacted, with ``attack_id``, ``outcome``, ``duplicate``);
  ``hits-index``: sorted set id -> ts.
- ``seen-hits``: sorted set hit id -> time counted (idempotency of redelivered entries,
  remembered for min(retention_s, 1 day) and at most max_hits ids);
  ``seen-requests:<window>``: pairing counts of the mirror/Lua duplicate rule (grouping.py).
- ``hits-by-class``, ``counters`` (field ``attacks``), ``timeline:<minute>``: the figures of
  /api/v1/stats and /api/v1/timeline.

Atomicity: a batch is one optimistic transaction. The keys it reads (seen-hits, the pairing
windows, attack-groups, the attacks) are WATCHed, everything it writes, including the
XACK of its stream entries, goes in one MULTI/EXEC. A crash before EXEC changes nothing (the
entries are redelivered); a concurrent writer makes EXEC fail and the batch is recomputed.
One aggregation instance is the intended deployment (all its batches commit first time);
several stay correct but contend on the seen-hits key.

Retention: ``trim`` deletes hits and attacks older than ``retention_s`` and beyond
``max_hits``/``max_attacks`` (oldest first), in bounded chunks, so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from node.aggregation.grouping import (
    Attack,
    BatchResult,
    GroupingParams,
    Item,
    apply_items,
    group_of,
    hit_ts,
    pair_of,
    with_outcome,
)
from node.aggregation.redact import redact_hit
from node.config import AggregationConfig
from node.queue.keys import Keys
from node.records import SOURCES, as_text

PAIR_WINDOW_S = 600  # mirror copy and Lua record of one request arrive within this (x2)
SEEN_TTL_S = 86400.0  # a hit id is remembered this long (redeliveries come within minutes)
TX_RETRIES = 20
TRIM_CHUNK = 1000
ATTACKS_FIELD = "attacks"  # field of keys.counters: attacks opened
TEXT_FIELDS = ("id", "record_id", "request_id", "client_ip", "host", "application", "method",
               "path", "class", "rule_id", "severity", "fragment", "source")

DROP_POINTERS_SCRIPT = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end"""

OnCommit = Callable[[Any], None]  # adds commands (the XACK) to the batch's MULTI


@dataclass(slots=True)
class Applied:
    """What one batch did (for metrics, sinks and tests)."""

    result: BatchResult = field(default_factory=BatchResult)
    counted: list[dict[str, Any]] = field(default_factory=list)  # samples counted as hits
    duplicates: int = 0
    redelivered: int = 0
    invalid: int = 0


def normalize_hit(item: Any) -> dict[str, Any] | None:
    """A hit from the stream with the types of records.Hit, or None when it is unusable."""
    if not isinstance(item, dict):
        return None
    hit = {str(k): v for k, v in item.items()}
    for name in TEXT_FIELDS:
        value = hit.get(name, "")
        hit[name] = as_text(value) if isinstance(value, (str, bytes)) else str(value)
    try:
        hit["ts"] = float(hit.get("ts") or 0.0)
        hit["score"] = int(hit.get("score") or 0)
        hit["response_status"] = int(hit.get("response_status") or 0)
    except (TypeError, ValueError):
        return None
    point = hit.get("point")
    hit["point"] = [as_text(p) if isinstance(p, (str, bytes)) else str(p)
                    for p in point] if isinstance(point, list) else []
    if not hit["id"] or not hit["class"] or not math.isfinite(hit["ts"]):
        return None
    return hit


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


class AttackStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, cfg: AggregationConfig) -> None:
        self.redis = redis
        self.keys = keys
        self.cfg = cfg
        self.params = GroupingParams.from_config(cfg)
        self.page_reads = 0  # pages read by list/export scans (tests check exports page)

    # ------------------------------------------------------------------ writing

    async def apply(self, items: Sequence[Any], on_commit: OnCommit | None = None,
                    now: float | None = None) -> Applied:
        """Count a batch of hits into attacks, store them, run ``on_commit`` in the same MULTI."""
        now = time.time() if now is None else now
        hits = [h for h in map(normalize_hit, items) if h is not None]
        for _ in range(TX_RETRIES):
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    applied = await self._apply_once(pipe, hits, now, on_commit)
                    applied.invalid = len(items) - len(hits)
                    return applied
            except WatchError:
                continue
        # A RedisError: the caller backs off and the entries stay pending (never dead-lettered).
        raise WatchError("aggregation: batch kept conflicting with another writer")

    async def _apply_once(self, pipe: Any, hits: list[dict[str, Any]], now: float,
                          on_commit: OnCommit | None) -> Applied:
        windows = self._pair_windows(now)
        await pipe.watch(self.keys.seen_hits, *windows)
        fresh, redelivered = await self._fresh(pipe, hits)
        # Pairing decides which copy of a request is the duplicate, counting decides which
        # hit opens an attack: both must see the batch in the same (time) order, or a Lua
        # record stamped before its mirror copy opens the attack as a "duplicate" turned
        # hit and the mirror copy counts again.
        fresh.sort(key=hit_ts)
        pairs = [pair_of(h) for h in fresh]
        duplicate, pair_counts = await self._pairing(pipe, windows, fresh, pairs)
        items = [Item(group_of(h), p, with_outcome(redact_hit(h)), d)
                 for h, p, d in zip(fresh, pairs, duplicate, strict=True)]
        current = await self._load_open(pipe, {i.group for i in items})
        result = apply_items(current, items, self.params)
        pipe.multi()
        counted = self._queue_writes(pipe, items, result, now)
        self._queue_pairing(pipe, windows[-1], pair_counts)
        if on_commit is not None:
            on_commit(pipe)
        await pipe.execute()
        return Applied(result, counted, sum(duplicate), redelivered)

    def _pair_windows(self, now: float) -> list[str]:
        window = int(now // PAIR_WINDOW_S)
        return [self.keys.seen_requests_window(window - 1), self.keys.seen_requests_window(window)]

    async def _fresh(self, pipe: Any, hits: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], int]:
        """Hits whose id was never counted (nor repeated earlier in this batch)."""
        if not hits:
            return [], 0
        scores = await pipe.zmscore(self.keys.seen_hits, [h["id"] for h in hits])
        fresh: dict[str, dict[str, Any]] = {}
        for hit, score in zip(hits, scores, strict=True):
            if score is None:
                fresh.setdefault(hit["id"], hit)
        return list(fresh.values()), len(hits) - len(fresh)

    async def _pairing(self, pipe: Any, windows: list[str], hits: list[dict[str, Any]],
                       pairs: list[str]) -> tuple[list[bool], dict[str, int]]:
        """Duplicate verdict per hit: the n-th hit of a pair from one source is a duplicate
        when another source already delivered n (see grouping.py). Also returns the new
        counts of the current window (fields it changed)."""
        if not hits:
            return [], {}
        fields = sorted({f"{p}|{s}" for p in pairs for s in SOURCES})
        previous, current = [[int(v or 0) for v in await pipe.hmget(w, fields)]
                             for w in windows]
        counts = {f: a + b for f, a, b in zip(fields, previous, current, strict=True)}
        window_now = dict(zip(fields, current, strict=True))
        duplicate: list[bool] = []
        changed: dict[str, int] = {}
        for hit, pair in zip(hits, pairs, strict=True):
            mine = f"{pair}|{hit['source']}"
            counts[mine] = counts.get(mine, 0) + 1
            changed[mine] = window_now[mine] = window_now.get(mine, 0) + 1
            others = (counts.get(f"{pair}|{s}", 0) for s in SOURCES if s != hit["source"])
            duplicate.append(any(n >= counts[mine] for n in others))
        return duplicate, changed

    async def _load_open(self, pipe: Any, groups: set[str]) -> dict[str, Attack | None]:
        if not groups:
            return {}
        ordered = sorted(groups)
        await pipe.watch(self.keys.attack_groups)
        ids = await pipe.hmget(self.keys.attack_groups, ordered)
        attack_keys = [self.keys.attack(i.decode()) for i in ids if i]
        loaded: dict[str, Attack] = {}
        if attack_keys:
            await pipe.watch(*attack_keys)
            for raw in await pipe.mget(attack_keys):
                if raw:
                    attack = orjson.loads(raw)
                    loaded[attack["id"]] = attack
        return {g: loaded.get(i.decode()) if i else None for g, i in zip(ordered, ids,
                                                                         strict=True)}

    def _queue_writes(self, pipe: Any, items: list[Item], result: BatchResult,
                      now: float) -> list[dict[str, Any]]:
        """The batch's writes, a few large commands (client CPU is per command)."""
        keys = self.keys
        if result.attacks:
            pipe.mset({keys.attack(i): _dumps(a) for i, a in result.attacks.items()})
            pipe.zadd(keys.attacks_index, {i: a["last_seen"] for i, a in result.attacks.items()})
        if result.pointers:
            pipe.hset(keys.attack_groups, mapping=result.pointers)
        if result.created:
            pipe.hincrby(keys.counters, ATTACKS_FIELD, len(result.created))
        stored = [dict(item.sample, attack_id=result.assigned.get(item.sample["id"], ""),
                       duplicate=item.duplicate) for item in items]
        if stored:
            pipe.mset({keys.hit(h["id"]): _dumps(h) for h in stored})
            pipe.zadd(keys.hits_index, {h["id"]: h["ts"] for h in stored})
            pipe.zadd(keys.seen_hits, dict.fromkeys((h["id"] for h in stored), now))
        counted = [h for h in stored if not h["duplicate"]]
        self._queue_figures(pipe, counted)
        return counted

    def _queue_figures(self, pipe: Any, counted: list[dict[str, Any]]) -> None:
        by_class: dict[str, int] = {}
        by_minute: dict[tuple[int, str], int] = {}
        for hit in counted:
            by_class[hit["class"]] = by_class.get(hit["class"], 0) + 1
            key = (int(hit["ts"] // 60), hit["class"])
            by_minute[key] = by_minute.get(key, 0) + 1
        for cls, n in by_class.items():
            pipe.hincrby(self.keys.hits_by_class, cls, n)
        for (minute, cls), n in by_minute.items():
            pipe.hincrby(self.keys.timeline(minute), cls, n)
            pipe.expire(self.keys.timeline(minute), int(self.cfg.retention_s))

    def _queue_pairing(self, pipe: Any, window: str, totals: dict[str, int]) -> None:
        """Absolute counts of the current window (read under WATCH, so exact): one HSET."""
        if totals:
            pipe.hset(window, mapping=totals)
            pipe.expire(window, PAIR_WINDOW_S * 2 + 60)

    # ------------------------------------------------------------------ retention

    async def trim(self, now: float | None = None) -> tuple[int, int]:
        """Delete what is beyond retention (age and count); (hits, attacks) deleted."""
        now = time.time() if now is None else now
        cutoff = now - self.cfg.retention_s
        hits = await self._trim_index(self.keys.hits_index, self.keys.hit, cutoff,
                                      self.cfg.max_hits)
        attacks = await self._trim_index(self.keys.attacks_index, self.keys.attack, cutoff,
                                         self.cfg.max_attacks)
        seen_cutoff = now - min(SEEN_TTL_S, self.cfg.retention_s)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.seen_hits, "-inf", seen_cutoff)
            pipe.zremrangebyrank(self.keys.seen_hits, 0, -(self.cfg.max_hits + 1))
            await pipe.execute()
        return hits, attacks

    async def _trim_index(self, index: str, item_key: Callable[[str], str], cutoff: float,
                          max_count: int) -> int:
        deleted = 0
        while True:
            old = await self.redis.zrange(index, "-inf", f"({cutoff!r}", byscore=True,
                                          offset=0, num=TRIM_CHUNK)
            excess = await self.redis.zcard(index) - len(old) - max_count
            if excess > 0:
                old += await self.redis.zrange(index, len(old),
                                               len(old) + min(excess, TRIM_CHUNK) - 1)
            if not old:
                return deleted
            ids = [m.decode() for m in old]
            if index == self.keys.attacks_index:
                await self._drop_pointers(ids)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(item_key(i) for i in ids))
                pipe.zrem(index, *ids)
                await pipe.execute()
            deleted += len(ids)

    async def _drop_pointers(self, attack_ids: list[str]) -> None:
        """Group pointers of attacks about to be deleted (unless they moved on meanwhile)."""
        docs = await self.get_json([self.keys.attack(i) for i in attack_ids])
        pairs = [v for d in docs if d and d.get("_group") for v in (d["_group"], d["id"])]
        if pairs:
            await self.redis.eval(DROP_POINTERS_SCRIPT, 1, self.keys.attack_groups, *pairs)

    # ------------------------------------------------------------------ reading

    async def get_json(self, keys: list[str]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        self.page_reads += 1
        return [orjson.loads(raw) if raw else None for raw in await self.redis.mget(keys)]

    async def get_attack(self, attack_id: str) -> Attack | None:
        return (await self.get_json([self.keys.attack(attack_id)]))[0]
