"""A real receiver (both listeners on loopback port 0, real writer, real Redis) per test, plus
raw-socket helpers: the mirror must be tested with bytes aiohttp's client refuses to send."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import msgpack
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from node.queue.connection import redis_client
from node.queue.keys import ENTRY_FIELD, Keys
from node.receiver.app import batch_runner, mirror_runner
from node.receiver.context import ReceiverContext
from node.receiver.service import receiver_context

TOKEN = "test-batch-token-0123456789"


@dataclass
class Receiver:
    ctx: ReceiverContext
    mirror_port: int
    batch_port: int
    check: aioredis.Redis  # a separate client for assertions

    @property
    def stream(self) -> str:
        return Keys(self.ctx.cfg.redis.prefix).requests

    def metric(self, name: str, **labels: str) -> float:
        return self.ctx.registry.get_sample_value(name, labels) or 0.0

    async def records(self) -> list[dict]:
        return [r for _, f in await self.check.xrange(self.stream)
                for r in msgpack.unpackb(f[ENTRY_FIELD], raw=False)]

    async def wait_records(self, count: int, timeout: float = 10.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            records = await self.records()
            if len(records) >= count or loop.time() > deadline:
                return records
            await asyncio.sleep(0.01)


async def _site(runner: web.BaseRunner) -> int:
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return site.port


@pytest.fixture
async def start_receiver(make_config):
    """start(**config overrides) -> Receiver; everything is stopped after the test."""
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: object) -> Receiver:
        overrides.setdefault("receiver__batch_token", TOKEN)
        cfg = make_config(**overrides)
        ctx = await stack.enter_async_context(receiver_context(cfg))
        runners = [mirror_runner(ctx), batch_runner(ctx)]
        for runner in runners:
            stack.push_async_callback(runner.cleanup)
        ports = [await _site(r) for r in runners]
        check = redis_client(cfg.redis)
        stack.push_async_callback(check.aclose)
        return Receiver(ctx, ports[0], ports[1], check)

    async with stack:
        yield start


async def raw_exchange(port: int, data: bytes, *, responses: int = 1,
                       timeout: float = 10.0) -> list[bytes]:
    """Send raw bytes; return the status lines of ``responses`` answers (or fewer at EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_responses(reader, responses), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """Status lines of ``count`` bodiless responses (the mirror always answers without one)."""
    lines: list[bytes] = []
    while len(lines) < count:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        status = head.split(b"\r\n", 1)[0]
        if b" 100 " not in status:
            lines.append(status)
    return lines


@pytest.fixture
def exchange():
    """raw_exchange(port, data, responses=1, timeout=10) -> status lines."""
    return raw_exchange


@pytest.fixture
def batch_token() -> str:
    return TOKEN
