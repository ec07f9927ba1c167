"""``oob-node queue depth|peek -n N``: look at the queue of a running node from a terminal.

Where it sits: an operator tool beside the flow; it only reads (XLEN, XINFO, XREVRANGE,
HGETALL). With no ``redis.url`` it connects to the embedded server of a running
``oob-node run`` (``<data_dir>/redis/redis.sock``). Record fields are attacker text: every
one is escaped (``node.logs.safe``) before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from node.config import NodeConfig, with_redis_url
from node.logs import safe
from node.queue.connection import redis_client
from node.queue.keys import AGGREGATION_GROUP, ENTRY_FIELD, PROCESSING_GROUP, Keys
from node.queue.streams import read_depth

MAX_PEEK_ENTRIES = 1000


def embedded_socket(cfg: NodeConfig) -> Path:
    """Where ``oob-node run`` puts the embedded server's socket (see cli.embedded_redis)."""
    return cfg.data_path / "redis" / "redis.sock"


def resolve_config(cfg: NodeConfig) -> NodeConfig | None:
    if cfg.redis.url:
        return cfg
    sock = embedded_socket(cfg)
    return with_redis_url(cfg, f"unix://{sock.resolve()}") if sock.exists() else None


def main(cfg: NodeConfig, args: argparse.Namespace) -> int:
    live = resolve_config(cfg)
    if live is None:
        print(f"oob-node: no redis.url set and no running node at {embedded_socket(cfg)} "
              "(start `oob-node run`, or pass --data-dir / --redis-url)", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(live, args))
    except (RedisError, OSError) as exc:
        print(f"oob-node: cannot read the queue: {safe(exc)}", file=sys.stderr)
        return 1


async def _run(cfg: NodeConfig, args: argparse.Namespace) -> int:
    redis = redis_client(cfg.redis, max_connections=2)
    try:
        keys = Keys(cfg.redis.prefix)
        if args.action == "peek":
            for line in await peek_lines(redis, keys, max(1, args.count)):
                print(line)
        else:
            for line in await depth_lines(redis, keys):
                print(line)
    finally:
        await redis.aclose()
    return 0


async def depth_lines(redis: aioredis.Redis, keys: Keys) -> list[str]:
    lines = []
    for stream, group in ((keys.requests, PROCESSING_GROUP), (keys.hits, AGGREGATION_GROUP)):
        d = await read_depth(redis, stream, group)
        state = f"group {group}: lag {d.lag}, pending {d.pending}" if d.group else \
            f"group {group} not created yet"
        lines.append(f"{stream}: {d.length} entries; {state}")
    lines.append(f"{keys.requests_dead}: {await redis.xlen(keys.requests_dead)} entries")
    counters = await redis.hgetall(keys.counters)
    by_source = await redis.hgetall(keys.records_by_source)
    lines.append("counters: " + _pairs(counters))
    lines.append("records by source: " + _pairs(by_source))
    return lines


def _pairs(mapping: dict[bytes, bytes]) -> str:
    if not mapping:
        return "(none)"
    return ", ".join(f"{safe(k)}={safe(v)}" for k, v in sorted(mapping.items()))


async def peek_lines(redis: aioredis.Redis, keys: Keys, count: int) -> list[str]:
    """The last ``count`` records of the requests stream, oldest first (like ``tail``)."""
    records: list[dict[str, Any]] = []
    entries = await redis.xrevrange(keys.requests, count=min(count, MAX_PEEK_ENTRIES))
    for _, fields in entries:
        batch = msgpack.unpackb(fields.get(ENTRY_FIELD, b"\x90"), raw=False,
                                unicode_errors="replace")
        records = list(batch) + records
        if len(records) >= count:
            break
    records = records[-count:]
    if not records:
        return [f"{keys.requests}: empty"]
    return [line for record in records for line in format_record(record)]


def format_record(r: dict[str, Any]) -> list[str]:
    ts = dt.datetime.fromtimestamp(float(r.get("ts", 0)), dt.UTC).isoformat(timespec="milliseconds")
    chain = ", ".join(safe(x, 60) for x in r.get("ip_chain", []))
    target = safe(r.get("path", ""), 300) + ("?" + safe(r.get("query", ""), 300)
                                             if r.get("query") else "")
    headers = r.get("headers", [])
    shown = "; ".join(f"{safe(n, 40)}: {safe(v, 80)}" for n, v in headers[:8])
    more = f" (+{len(headers) - 8} more)" if len(headers) > 8 else ""
    body = f"{r.get('body_size', 0)} bytes" + (" (truncated)" if r.get("body_truncated") else "")
    return [
        f"{safe(r.get('id', '?'))}  {ts}  {safe(r.get('source', '?'))}  "
        f"client {safe(r.get('client_ip', '?'))} (chain: {chain})",
        f"  {safe(r.get('method', '?'), 40)} {safe(r.get('scheme', 'http'))}://"
        f"{safe(r.get('host', ''), 120)}{':' + str(r['port']) if r.get('port') else ''}"
        f"{target}  HTTP/{safe(r.get('http_version', '?'))}",
        f"  headers: {shown}{more}",
        f"  body: {body}: {safe(r.get('body', b''), 120)}",
    ]
