"""Which queue layout is faster: one XADD per record (pipelined) or several records per entry?

Writes the same records to a real embedded Redis both ways through redis-py (hiredis) and
prints records/s and client CPU per record. The StreamWriter keeps the winner (packing).

    .venv/bin/python bench/queue_packing.py [--records 200000] [--per-entry 100]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import msgpack
import redis.asyncio as aioredis

from node.queue.embedded import EmbeddedRedis
from node.queue.keys import ENTRY_FIELD


def sample_record(i: int) -> dict:
    return {"v": 1, "id": f"01J{i:023d}", "ts": time.time(), "source": "mirror",
            "request_id": "9f0c6b1e-4f1a-4a53-9d38-1a2b3c4d5e6f", "client_ip": "203.0.113.7",
            "peer_ip": "127.0.0.1", "ip_chain": ["203.0.113.7", "127.0.0.1"], "method": "GET",
            "scheme": "http", "host": "shop.example", "port": 8080, "path": "/search",
            "query": f"q=item{i}&page=2", "http_version": "1.1",
            "headers": [["host", "shop.example-shadow:8080"], ["user-agent", "curl/8.5.0"],
                        ["accept", "*/*"], ["x-forwarded-for", "203.0.113.7"]],
            "body": b"", "body_size": 0, "body_truncated": False}


async def per_record(redis: aioredis.Redis, records: list[dict], pipeline_len: int) -> None:
    for start in range(0, len(records), pipeline_len):
        pipe = redis.pipeline(transaction=False)
        for rec in records[start:start + pipeline_len]:
            pipe.xadd("bench:per-record", {ENTRY_FIELD: msgpack.packb(rec, use_bin_type=True)},
                      maxlen=10_000_000, approximate=True)
        await pipe.execute()


async def packed(redis: aioredis.Redis, records: list[dict], per_entry: int) -> None:
    pipe_entries = 16
    step = per_entry * pipe_entries
    for start in range(0, len(records), step):
        pipe = redis.pipeline(transaction=False)
        chunk = records[start:start + step]
        for i in range(0, len(chunk), per_entry):
            pipe.xadd("bench:packed", {ENTRY_FIELD: msgpack.packb(chunk[i:i + per_entry],
                                                                  use_bin_type=True)},
                      maxlen=10_000_000, approximate=True)
        await pipe.execute()


async def measure(name: str, coro) -> float:
    wall, cpu = time.perf_counter(), time.process_time()
    await coro
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu


async def main(args: argparse.Namespace) -> None:
    records = [sample_record(i) for i in range(args.records)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        redis = aioredis.Redis.from_url(server.url)
        results = {}
        for name, coro in (("pipelined XADD per record", per_record(redis, records, 100)),
                           (f"{args.per_entry} records per entry",
                            packed(redis, records, args.per_entry))):
            wall, cpu = await measure(name, coro)
            results[name] = args.records / wall
            print(f"{name:<28} {args.records / wall:>10,.0f} records/s   "
                  f"client CPU {cpu / args.records * 1e6:6.1f} us/record")
        await redis.aclose()
    a, b = results.values()
    print(f"packing is {b / a:.1f}x faster")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-entry", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
