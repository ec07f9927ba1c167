"""Keyset paging over the sorted-set indexes (attacks by last_seen, hits by ts).

A cursor is the position ``(score, id)`` of the last item a page returned, made opaque
(base64url of JSON). The next page starts strictly after that position, so items inserted
while a client pages (new hits, new attacks) never shift or repeat what it sees, unlike an
offset. Members with equal scores are ordered by id, as Redis orders them.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

Position = tuple[float, str]
MAX_CURSOR_CHARS = 512


def encode_cursor(position: Position) -> str:
    raw = orjson.dumps([position[0], position[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position in ``cursor``; ValueError when it is not one this API issued."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError("too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor") from None
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not isinstance(
            member, str) or not math.isfinite(score):
        raise ValueError("not a cursor")
    return float(score), member


def _after(position: Position | None, score: float, member: str, desc: bool) -> bool:
    """True when (score, member) comes strictly after ``position`` in the scan order."""
    if position is None:
        return True
    if desc:
        return score < position[0] or (score == position[0] and member < position[1])
    return score > position[0] or (score == position[0] and member > position[1])


async def _range(redis: aioredis.Redis, key: str, lo: float, hi: float, desc: bool,
                 offset: int, count: int) -> list[tuple[bytes, float]]:
    start, end = (hi, lo) if desc else (lo, hi)
    rows: list[Any] = await redis.zrange(key, start, end, desc=desc, byscore=True,
                                         offset=offset, num=count, withscores=True)
    return [(m, float(s)) for m, s in rows]


async def scan(redis: aioredis.Redis, key: str, *, lo: float = -math.inf,
               hi: float = math.inf, after: Position | None = None, desc: bool = True,
               chunk: int = 500) -> AsyncIterator[tuple[str, float]]:
    """(member, score) of ``key`` with lo <= score <= hi, strictly after ``after``, in order
    (newest first when ``desc``), read ``chunk`` members per round trip."""
    if after is not None:
        hi, lo = (min(hi, after[0]), lo) if desc else (hi, max(lo, after[0]))
    offset = 0
    while True:
        rows = await _range(redis, key, lo, hi, desc, offset, chunk)
        emitted = False
        for raw, score in rows:
            member = raw.decode("utf-8", "replace")
            if _after(after, score, member, desc):
                yield member, score
                after, emitted = (score, member), True
        if len(rows) < chunk:
            return
        if emitted:  # restart at the last position: inserts before it cannot shift us
            assert after is not None
            hi, lo, offset = (after[0], lo, 0) if desc else (hi, after[0], 0)
        else:  # a run of equal scores longer than a chunk: step over it
            offset += chunk
