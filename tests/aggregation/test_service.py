"""The aggregation consumer on the real hits stream: unusable hits are skipped and acked,
undecodable entries go to the hits dead-letter stream, the role refuses to run without a
token."""

from __future__ import annotations

import asyncio

import pytest
from agg_helpers import make_hit, wait_for, xadd_hits

from node.aggregation.service import serve
from node.config import ConfigError
from node.queue.keys import ENTRY_FIELD


async def test_bad_items_and_entries_never_stall_the_group(client, auth):
    redis, keys = client.deps.redis, client.deps.keys
    await xadd_hits(redis, keys.hits, [{"foo": 1}, {"id": "x", "class": "sqli", "ts": "nan"},
                                       make_hit("good1")])
    await redis.xadd(keys.hits, {ENTRY_FIELD: b"\xc1 not msgpack"})
    await xadd_hits(redis, keys.hits, [make_hit("good2", ip="10.7.7.7")])

    async def drained() -> bool:
        # The batch's ack is in the store's MULTI: the stats can show it before the
        # aggregator, resumed after EXEC, has counted the batch. Wait for both.
        stats = await (await client.get("/api/v1/stats", headers=auth)).json()
        return (stats["queues"]["hits"]["lag"] == 0 and stats["queues"]["hits"]["pending"] == 0
                and client.aggregator.processed >= 2)

    await wait_for(drained, "the hits stream to drain")
    assert client.aggregator.processed == 2
    assert await redis.xlen(keys.hits_dead) == 1
    body = await (await client.get("/api/v1/attacks", headers=auth)).json()
    assert len(body["items"]) == 2


async def test_the_role_needs_an_api_token(make_config):
    with pytest.raises(ConfigError, match="aggregation.api_token"):
        await serve(make_config(), asyncio.Event())
