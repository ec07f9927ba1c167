"""Helpers of the processing tests: records, stream writes, and analyzers that worker
processes (multiprocessing spawn) can import by name."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

from node.config import NodeConfig
from node.queue.consumer import decode_batch, pack_batch
from node.queue.keys import ENTRY_FIELD, Keys
from node.records import Hit, hit_id

# Matches both fake_analyze ("attack" in the query) and the real engine (SQL injection).
ATTACK_QUERY = "q=attack%27%20OR%20%271%27%3D%271"
STALL_MARK = "stalled"  # file in data_dir a stalling analyzer creates when it starts stalling
SLOW_MARK = "slow-started"


def record(rid: str, path: str = "/", query: str = "", host: str = "shop.example",
           headers: list[list[Any]] | None = None, body: bytes = b"") -> dict[str, Any]:
    """A RequestRecord v1 as the receiver writes it."""
    return {"v": 1, "id": rid, "ts": 1700000000.0, "source": "mirror", "request_id": f"rq-{rid}",
            "client_ip": "203.0.113.7", "peer_ip": "127.0.0.1", "ip_chain": ["127.0.0.1"],
            "method": "GET", "scheme": "http", "host": host, "port": 80, "path": path,
            "query": query, "http_version": "1.1", "headers": headers or [],
            "body": body, "body_size": len(body), "body_truncated": False}


async def put(redis: Any, prefix: str, records: list[dict[str, Any]]) -> bytes:
    return await redis.xadd(Keys(prefix).requests, {ENTRY_FIELD: pack_batch(records)})


def fake_analyze(rec: dict[str, Any], exclusions: Any, application: str) -> list[Hit]:
    """One hit per record whose query contains "attack"; raises on path /poison."""
    if rec["path"] == "/poison":
        raise RuntimeError("poisoned record <script>")
    if "attack" not in rec["query"]:
        return []
    point = ["query", "q"]
    return [{"id": hit_id(rec["id"], "test-rule", point), "record_id": rec["id"],
             "request_id": rec["request_id"], "ts": rec["ts"], "client_ip": rec["client_ip"],
             "host": rec["host"], "application": application, "method": rec["method"],
             "path": rec["path"], "class": "sqli", "rule_id": "test-rule", "severity": "high",
             "score": 5, "point": point, "fragment": "attack", "source": rec["source"],
             "response_status": 0}]


def fake_factory(cfg: NodeConfig):
    return fake_analyze


def stalling_factory(cfg: NodeConfig):
    """fake_analyze, except that a record on /stall marks the file and stalls (bounded)."""
    return _stalling(cfg, fake_analyze)


def stalling_engine_factory(cfg: NodeConfig):
    """The real engine, except that a record on /stall marks the file and stalls."""
    from node.processing.worker import engine_analyzer

    return _stalling(cfg, engine_analyzer(cfg))


def _stalling(cfg: NodeConfig, inner):
    mark = Path(cfg.data_dir) / STALL_MARK

    def analyze(rec: dict[str, Any], exclusions: Any, application: str) -> list[Hit]:
        if rec["path"] == "/stall":
            mark.write_text(str(os.getpid()))
            time.sleep(60)
        return inner(rec, exclusions, application)

    return analyze


def hanging_factory(cfg: NodeConfig):
    """fake_analyze, except that a record on /hang never finishes (as a ReDoS would)."""

    def analyze(rec: dict[str, Any], exclusions: Any, application: str) -> list[Hit]:
        if rec["path"] == "/hang":
            time.sleep(120)
        return fake_analyze(rec, exclusions, application)

    return analyze


GO_MARK = "go"


def gated_factory(cfg: NodeConfig):
    """fake_analyze, loaded only once the test creates the GO_MARK file (a slow rule load)."""
    go = Path(cfg.data_dir) / GO_MARK
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return fake_analyze


def slow_factory(cfg: NodeConfig):
    """fake_analyze taking 20 ms per record; marks the file when it starts a batch."""
    mark = Path(cfg.data_dir) / SLOW_MARK

    def analyze(rec: dict[str, Any], exclusions: Any, application: str) -> list[Hit]:
        mark.write_text(str(os.getpid()))
        time.sleep(0.02)
        return fake_analyze(rec, exclusions, application)

    return analyze


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll an async predicate until true; fail after ``timeout`` seconds (never a timing
    assertion: only a bound so a broken worker cannot hang the suite)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def hits_in_stream(redis: Any, prefix: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(Keys(prefix).hits)
    return [hit for _, fields in entries for hit in decode_batch(fields[ENTRY_FIELD])]


async def drained(redis: Any, prefix: str) -> bool:
    """The processing group exists and has nothing undelivered or unacked."""
    stream = Keys(prefix).requests
    groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
    return bool(groups) and (groups[0]["lag"], groups[0]["pending"]) == (0, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
