"""The receiver role: ``serve(cfg, stop)`` runs the mirror and batch listeners and the stream
writer until ``stop`` is set (``oob-node receiver`` / ``oob-node run``).

Shutdown order: stop accepting, let requests in progress finish (bounded), then flush the
writer (bounded by ``SHUTDOWN_FLUSH_S``; what cannot be written is counted as shed), then
close the Redis client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from node.config import NodeConfig, parse_listen, read_secret
from node.queue.connection import redis_client
from node.receiver.app import batch_runner, mirror_runner
from node.receiver.context import ReceiverContext

log = logging.getLogger(__name__)
SHUTDOWN_FLUSH_S = 5.0


@contextlib.asynccontextmanager
async def receiver_context(cfg: NodeConfig) -> AsyncIterator[ReceiverContext]:
    """Redis client + writer task for the listeners; flushed and closed on exit."""
    rcv = cfg.receiver
    token = read_secret(rcv.batch_token, rcv.batch_token_file, "receiver.batch_token")
    if token is None:
        log.warning("no batch token configured: /v1/batch answers 401 to everything "
                    "(set OOB_BATCH_TOKEN or receiver.batch_token_file)")
    redis = redis_client(cfg.redis)
    ctx = ReceiverContext.create(cfg, redis, token)
    writer_task = asyncio.create_task(ctx.writer.run(), name="stream-writer")
    try:
        yield ctx
    finally:
        await ctx.writer.close(SHUTDOWN_FLUSH_S)  # returns once run() has returned
        if not writer_task.done():  # pragma: no cover - close() bounds the flush
            writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
        await redis.aclose()


async def start_site(runner: web.BaseRunner, listen: str, name: str) -> web.TCPSite:
    await runner.setup()
    host, port = parse_listen(name, listen)
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    return site


async def serve(cfg: NodeConfig, stop: asyncio.Event) -> None:
    async with receiver_context(cfg) as ctx:
        runners = [mirror_runner(ctx), batch_runner(ctx)]
        try:
            await start_site(runners[0], cfg.receiver.mirror_listen, "receiver.mirror_listen")
            await start_site(runners[1], cfg.receiver.batch_listen, "receiver.batch_listen")
            log.info("receiver listening", extra={"mirror": cfg.receiver.mirror_listen,
                                                  "batch": cfg.receiver.batch_listen})
            await stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()
