"""Shared fixtures: a real Redis server per test session (the embedded launcher) and a key
prefix per test, so tests never see each other's streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from node.config import NodeConfig, build_config
from node.queue.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_config(redis_server: EmbeddedRedis, prefix: str, tmp_path: Path):
    """Config for a test: the session's real Redis, a fresh prefix and data dir, no env."""

    def make(**overrides: object) -> NodeConfig:
        base: dict[str, object] = {"redis.url": redis_server.url, "redis.prefix": prefix,
                                   "data_dir": str(tmp_path / "data")}
        base.update({k.replace("__", "."): v for k, v in overrides.items()})
        return build_config(None, env={}, overrides=base)

    return make


@pytest.fixture
def config(make_config) -> NodeConfig:
    return make_config()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=False)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private server for one test that may kill() and start() it again (outage tests)."""
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()
