"""Sinks: a real loopback webhook receives signed deliveries (new attack, updates every N
hits); a webhook that hangs or is down costs aggregation nothing (compared by processed hit
counts, never by wall-clock time); JSON lines go to a file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import orjson
from agg_helpers import T0, make_hit, wait_for, xadd_hits
from aiohttp import web

SECRET = "webhook-secret"


def verify(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def webhook(aiohttp_server, handler):
    app = web.Application()
    app.router.add_post("/hook", handler)
    return await aiohttp_server(app, host="127.0.0.1")


async def test_webhook_receives_signed_events(make_client, aiohttp_server):
    received: list[tuple[bytes, dict]] = []
    failures = {"left": 1}  # the first delivery fails once: the retry must succeed

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        received.append((body, dict(request.headers)))
        return web.Response(status=204)

    server = await webhook(aiohttp_server, hook)
    client = await make_client(sinks__webhook_url=str(server.make_url("/hook")),
                               sinks__webhook_secret=SECRET, sinks__webhook_update_every=3)
    redis, keys = client.deps.redis, client.deps.keys
    for batch, total in (((1, 2), 2), ((3, 4), 4), ((5, 6, 7), 7)):  # one batch at a time
        await xadd_hits(redis, keys.hits, [make_hit(f"w{i}", ts=T0 + i) for i in batch])

        async def processed(total: int = total) -> bool:
            return client.aggregator.processed == total

        await wait_for(processed, f"{total} hits processed")

    async def arrived() -> bool:
        return len(received) >= 3

    await wait_for(arrived, "webhook deliveries")
    events = [orjson.loads(body) for body, _ in received]
    assert [(e["event"], e["attack"]["hits"]) for e in events] == [
        ("attack.new", 2), ("attack.update", 4), ("attack.update", 7)]
    assert "sample_hits" not in events[0]["attack"] and events[0]["last_hit"]["record_id"]
    for body, headers in received:
        assert verify(SECRET, body, headers["X-OOB-Signature"])
        assert not verify("other", body, headers["X-OOB-Signature"])
        assert headers["X-OOB-Event"] in ("attack.new", "attack.update")
    metrics = await (await client.get("/metrics")).text()
    assert 'oob_sink_deliveries_total{sink="webhook"} 3.0' in metrics
    assert 'oob_sink_failures_total{sink="webhook"} 1.0' in metrics


async def test_a_hanging_webhook_does_not_slow_aggregation(make_client, aiohttp_server,
                                                           redis, prefix):
    calls = {"n": 0}
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        calls["n"] += 1
        await release.wait()  # never answers while the test runs
        return web.Response(status=204)

    server = await webhook(aiohttp_server, hang)
    client = await make_client(sinks__webhook_url=str(server.make_url("/hook")),
                               sinks__webhook_secret=SECRET, sinks__webhook_queue_size=5,
                               sinks__webhook_timeout_s=60)
    # The same work without any webhook, on its own keys (cleaned up by the redis fixture).
    baseline = await make_client(redis__prefix=f"{prefix}:baseline")
    n_attacks, per_attack = 60, 5
    hits = [make_hit(f"d{a}-{h}", ts=T0 + h, ip=f"10.3.{a}.1")
            for a in range(n_attacks) for h in range(per_attack)]
    for c in (client, baseline):
        for start in range(0, len(hits), 50):
            await xadd_hits(c.deps.redis, c.deps.keys.hits, hits[start:start + 50])

    async def done() -> bool:
        return client.aggregator.processed == baseline.aggregator.processed == len(hits)

    try:
        await wait_for(done, "both nodes to process every hit")
        metrics = await (await client.get("/metrics")).text()
    finally:
        release.set()
    assert 'oob_sink_deliveries_total{sink="webhook"} 0.0' in metrics
    dropped = float(metrics.split('oob_sink_dropped_total{sink="webhook"} ')[1].split()[0])
    assert dropped >= n_attacks - 5 - 1  # the queue kept the newest 5, one is in flight
    assert calls["n"] == 1


async def test_a_webhook_that_is_down_is_counted(make_client, unused_tcp_port):
    client = await make_client(sinks__webhook_url=f"http://127.0.0.1:{unused_tcp_port}/x",
                               sinks__webhook_retries=1)
    await xadd_hits(client.deps.redis, client.deps.keys.hits, [make_hit("down1")])

    async def failed() -> bool:
        text = await (await client.get("/metrics")).text()
        return 'oob_sink_dropped_total{sink="webhook"} 1.0' in text

    await wait_for(failed, "the failed delivery to be counted")
    assert client.aggregator.processed == 1


async def test_jsonl_sink_writes_one_line_per_event(make_client, tmp_path):
    path = tmp_path / "events.jsonl"
    client = await make_client(sinks__jsonl=str(path))
    await xadd_hits(client.deps.redis, client.deps.keys.hits,
                    [make_hit("j1"), make_hit("j2", cls="xss", rule_id="xss-tag")])

    async def written() -> bool:
        return path.exists() and len(path.read_bytes().splitlines()) == 2

    await wait_for(written, "two JSON lines")
    events = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert sorted(e["attack"]["class"] for e in events) == ["sqli", "xss"]
    assert {e["event"] for e in events} == {"attack.new"}
