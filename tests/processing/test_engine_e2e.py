"""With the real detection engine: records written by the receiver's StreamWriter become hits
from the processing role's worker processes, and exclusions apply without a restart."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from proc_helpers import drained, free_port, hits_in_stream, record, wait_for
from prometheus_client import CollectorRegistry

from node.metrics import ProcessingMetrics, ReceiverMetrics
from node.processing.enrich import enrich_hits
from node.processing.supervisor import serve
from node.processing.worker import run_worker
from node.queue.keys import Keys
from node.queue.streams import StreamWriter
from node.records import HIT_FIELDS, HIT_OPTIONAL_FIELDS

SQLI = "id=1%27%20OR%20%271%27%3D%271"
TRAVERSAL = "file=..%2F..%2F..%2F..%2Fetc%2Fpasswd"

RECORDS = [
    record("01SQLI", path="/items", query=SQLI, host="api.shop.example"),
    record("02TRAV", path="/download", query=TRAVERSAL, host="shop.example"),
    record("03BENIGN", path="/search", query="q=blue+shoes&page=2", host="shop.example"),
    record("04XBODY", path="/login", host="other.example",
           headers=[["Content-Type", "application/x-www-form-urlencoded"]],
           body=b"user=admin%27--&password=x"),
    record("05BADUTF8", path="/p", query="q=%ff", host="shop.example",
           headers=[[b"X-Bin\xff", b"\xfe\xff"]]),
]
APPLICATIONS = {"shop": ["shop.example", "*.shop.example"]}


async def write_records(redis, cfg, records) -> None:
    """Enqueue like the receiver does: the StreamWriter, flushed on close."""
    writer = StreamWriter(redis, Keys(cfg.redis.prefix), cfg.queue,
                          ReceiverMetrics(CollectorRegistry()))
    task = asyncio.create_task(writer.run())
    for rec in records:
        assert writer.offer(rec) is None
    await writer.close()
    await task


def expected_hits(engine, records) -> dict[str, dict]:
    apps = {"shop.example": "shop", "api.shop.example": "shop"}
    return {h["id"]: h for r in records
            for h in enrich_hits(r, engine.analyze(r, None, apps.get(r["host"], r["host"])))}


async def test_records_to_hits_through_worker_processes(make_config, redis, prefix, engine,
                                                        seed_cache):
    port = free_port()
    cfg = seed_cache(make_config(**{
        "processing.workers": 2, "processing.block_ms": 100,
        "processing.metrics_listen": f"127.0.0.1:{port}",
        "aggregation.applications": APPLICATIONS}))
    stop = asyncio.Event()
    role = asyncio.create_task(serve(cfg, stop))
    try:
        await write_records(redis, cfg, RECORDS)
        await wait_for(lambda: drained(redis, prefix), timeout=120)
    finally:
        stop.set()
        await asyncio.wait_for(role, timeout=60)
    hits = await hits_in_stream(redis, prefix)
    expected = expected_hits(engine, RECORDS)
    assert {h["id"]: h for h in hits} == expected  # same ids, same fields, once each
    assert len(hits) == len(expected)
    assert all(set(HIT_FIELDS) <= set(h) <= set(HIT_FIELDS) | set(HIT_OPTIONAL_FIELDS)
               for h in hits)
    assert all("fingerprint" in h for h in hits)
    by_record = {h["record_id"]: h for h in hits}
    assert by_record["01SQLI"]["class"] == "sqli"
    assert by_record["01SQLI"]["application"] == "shop"
    assert by_record["01SQLI"]["request_id"] == "rq-01SQLI"
    assert by_record["02TRAV"]["class"] == "path_traversal"
    assert "03BENIGN" not in by_record
    counters = await redis.hgetall(Keys(prefix).counters)
    assert counters[b"hits"] == str(len(hits)).encode()
    assert counters[b"records"] == str(len(RECORDS)).encode()


@contextlib.asynccontextmanager
async def worker_task(cfg, redis, analyze):
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(cfg, stop, analyze, consumer_name="w1",
                                          metrics=ProcessingMetrics(CollectorRegistry()),
                                          redis=redis))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_exclusions_added_to_redis_apply_without_restart(make_config, redis, prefix,
                                                               engine):
    cfg = make_config(**{"processing.block_ms": 50})
    keys = Keys(prefix)

    async def classes_of(rid: str) -> set[str]:
        return {h["class"] for h in await hits_in_stream(redis, prefix) if h["record_id"] == rid}

    async with worker_task(cfg, redis, engine.analyze):
        both = "&".join([SQLI, TRAVERSAL])
        await write_records(redis, cfg, [record("before", query=both)])
        await wait_for(lambda: drained(redis, prefix))
        assert {"sqli", "path_traversal"} <= await classes_of("before")

        exclusion = {"id": "ex1", "class": "sqli", "host": "shop.example",
                     "comment": "false positive", "created": 1700000000.0}
        await redis.hset(keys.exclusions, mapping={"ex1": orjson.dumps(exclusion),
                                                   "broken": b"{not json",
                                                   "invalid": b'{"class": "nope"}'})
        await redis.incr(keys.exclusions_version)
        await write_records(redis, cfg, [record("after", query=both),
                                         record("elsewhere", query=both, host="x.example")])
        await wait_for(lambda: drained(redis, prefix))
        after = await classes_of("after")
        assert "sqli" not in after and "path_traversal" in after
        assert "sqli" in await classes_of("elsewhere")  # host did not match

        await redis.hdel(keys.exclusions, "ex1")
        await redis.incr(keys.exclusions_version)
        await write_records(redis, cfg, [record("removed", query=both)])
        await wait_for(lambda: drained(redis, prefix))
        assert "sqli" in await classes_of("removed")
