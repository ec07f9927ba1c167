"""Helpers of the aggregation tests: hits shaped exactly as processing emits them, and
writing them to the hits stream as processing does (one msgpack array per entry)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from node.queue.keys import ENTRY_FIELD
from node.records import hit_id

T0 = float(int(time.time()) // 3600 * 3600 - 86400)  # a day ago: inside the retention
WAIT_S = 20.0  # upper bound of every wait; never an assertion on time


def make_hit(record_id: str, *, ts: float = T0, cls: str = "sqli", ip: str = "203.0.113.7",
             host: str = "shop.example", path: str = "/products", point: tuple[str, ...] = (
                 "query", "id"), rule_id: str = "sqli-tautology", fragment: str = "' OR 1=1--",
             source: str = "mirror", request_id: str | None = None, status: int = 0,
             **extra: Any) -> dict[str, Any]:
    hit = {
        "id": hit_id(record_id, rule_id, list(point)), "record_id": record_id,
        "request_id": f"req-{record_id}" if request_id is None else request_id, "ts": ts,
        "client_ip": ip, "host": host, "application": "", "method": "GET", "path": path,
        "class": cls, "rule_id": rule_id, "severity": "high", "score": 5,
        "point": list(point), "fragment": fragment, "source": source,
        "response_status": status,
    }
    hit.update(extra)
    return hit


async def xadd_hits(redis: Any, stream: str, hits: list[dict[str, Any]]) -> bytes:
    return await redis.xadd(stream, {ENTRY_FIELD: msgpack.packb(hits, use_bin_type=True)})


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str,
                   timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
