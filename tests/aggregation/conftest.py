"""Fixtures of the aggregation tests: the real aggregation app (hits consumer included) on a
loopback aiohttp test server, over the session's real Redis."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))  # agg_helpers

from node.aggregation.api import DEPS  # noqa: E402
from node.aggregation.app import AGGREGATOR, create_app  # noqa: E402

TOKEN = "test-token-" + "x" * 20


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def make_client(make_config, aiohttp_client):
    """An API client of a fresh app; keyword arguments are config overrides."""

    async def make(**overrides):
        cfg = make_config(**overrides)
        app = create_app(cfg, TOKEN, CollectorRegistry())
        client = await aiohttp_client(app)
        client.deps = app[DEPS]
        client.aggregator = app[AGGREGATOR]
        client.cfg = cfg
        return client

    return make


@pytest.fixture
async def client(make_client):
    return await make_client()
