"""The seed scenario end to end, as ``oob-node run`` does it but in-process: receiver,
processing (real worker processes and the real detection engine) and aggregation over the
session's real Redis; two attacks sent to the mirror port show up in GET /api/v1/attacks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aiohttp
import pytest

from node.aggregation.service import serve as serve_aggregation
from node.processing.supervisor import serve as serve_processing
from node.receiver.service import serve as serve_receiver

TOKEN = "seed-token-" + "y" * 20
START_WAIT_S = 180.0  # roles ready (a cold worker compiles the rule database once)
SEEN_WAIT_S = 20.0  # from the requests to both attacks listed: "within a few seconds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def node(cfg):
    stop = asyncio.Event()
    tasks = [asyncio.create_task(role(cfg, stop)) for role in
             (serve_receiver, serve_processing, serve_aggregation)]
    try:
        yield tasks
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)


async def wait_ready(session, urls: list[str], tasks) -> None:
    deadline = time.monotonic() + START_WAIT_S
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        for task in tasks:
            if task.done():
                task.result()  # a role died: raise its error
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(pending[0]) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        await asyncio.sleep(0.2)
    assert not pending, f"not ready: {pending}"


async def poll_attacks(session, base: str, tasks) -> dict[str, dict]:
    deadline = time.monotonic() + SEEN_WAIT_S
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() < deadline:
        for task in tasks:
            if task.done():
                task.result()  # a role died: raise its error
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/api/v1/attacks", headers=headers) as resp:
                if resp.status == 200:
                    attacks = {a["class"]: a for a in (await resp.json())["items"]}
                    if {"path_traversal", "sqli"} <= set(attacks):
                        return attacks
        await asyncio.sleep(0.2)
    raise AssertionError("the seed attacks did not appear in /api/v1/attacks")


@pytest.mark.e2e
async def test_seed_scenario(make_config, redis):
    ports = {name: free_port() for name in ("mirror", "batch", "console", "metrics")}
    cfg = make_config(receiver__mirror_listen=f"127.0.0.1:{ports['mirror']}",
                      receiver__batch_listen=f"127.0.0.1:{ports['batch']}",
                      aggregation__console_listen=f"127.0.0.1:{ports['console']}",
                      processing__metrics_listen=f"127.0.0.1:{ports['metrics']}",
                      processing__workers=1, aggregation__api_token=TOKEN,
                      receiver__batch_token="batch-" + "z" * 20)
    mirror = f"http://127.0.0.1:{ports['mirror']}"
    ready = [f"http://127.0.0.1:{ports[name]}/readyz" for name in ("batch", "metrics",
                                                                   "console")]
    async with node(cfg) as tasks, aiohttp.ClientSession() as session:
        await wait_ready(session, ready, tasks)
        for path in ("/etc/passwd", "/?id=1%27%20OR%201=1--"):
            async with session.get(mirror + path, headers={"Host": "shop.example"}) as resp:
                assert resp.status < 500
        attacks = await poll_attacks(session, f"http://127.0.0.1:{ports['console']}", tasks)
    traversal, sqli = attacks["path_traversal"], attacks["sqli"]
    assert traversal["client_ip"] == sqli["client_ip"] == "127.0.0.1"
    assert traversal["hits"] >= 1 and sqli["hits"] >= 1
    assert traversal["sources"] == ["mirror"] and sqli["status"] == "monitored"
