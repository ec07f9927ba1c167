"""Envoy's cost of the oob-node Lua plugin: latency and Envoy CPU per request.

Runs the real Envoy (one worker) with deploy/envoy/gateway.yaml in front of the demo app, in
four modes: no plugin, the plugin unbatched (one POST per request), batched, and batched with
capture_response_body off (the response body is then not read at all); with --floor also
an empty Lua filter. The mirror policy is off in all, so only the plugin is measured.
Batches go to a minimal sink that answers 202 (or to a real node's batch listener with
--batch-port/--token).

For each mode: N requests (3 GETs with a query and browser-like headers, then 1 POST with a
2 KB JSON body, repeated) at a fixed concurrency after a warm-up; client-side p50/p99
latency, and Envoy's CPU per request (its process CPU clock before/after, or /proc ticks).
The Envoys run side by side and are measured in interleaved rounds, so a busy
neighbour on the machine slows all modes alike; a mode's CPU figure is its median round.

    .venv/bin/python bench/envoy_overhead.py [-n 5000] [--concurrency 8] [--batch 50] [--floor]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from envoy_harness import (  # noqa: E402
    Gateway,
    Proc,
    envoy_stats,
    free_port,
    running,
    start_demo,
    start_envoy,
    wait_port,
)

HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
    "Accept-Encoding": "gzip, deflate",
    "Cookie": "session=4f2a9c1e7b; theme=dark",
    "X-Forwarded-For": "203.0.113.7",
}
BODY = b'{"items": [' + b",".join(b'{"sku": "A-%04d", "qty": 1}' % i for i in range(80)) + b"]}"


@dataclass
class Result:
    mode: str
    p50_ms: float
    p99_ms: float
    cpu_us: float
    posts: int  # batch POSTs Envoy made


# ------------------------------------------------------------------ the batch sink

def sink_main(port: int) -> None:
    """A stand-in batch listener: reads the batch, answers 202 at once."""

    async def batch(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"accepted": 0, "rejected": 0, "errors": []}, status=202)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/batch", batch)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ------------------------------------------------------------------ load

async def one(session: aiohttp.ClientSession, url: str, i: int) -> float:
    start = time.perf_counter()
    if i % 4 == 3:
        async with session.post(f"{url}/echo/cart", data=BODY, headers=HEADERS) as r:
            await r.read()
    else:
        async with session.get(f"{url}/echo/products?id={i}&q=shoes", headers=HEADERS) as r:
            await r.read()
    if r.status != 200:
        raise RuntimeError(f"status {r.status}")
    return time.perf_counter() - start


async def load(url: str, n: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for i in counter:
                latencies.append(await one(session, url, i))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Mode:
    name: str
    gateway: Gateway
    envoy: Proc | None = None
    cpu_us: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def result(self, posts: int) -> Result:
        return Result(self.name, percentile(self.latencies, 50) * 1000,
                      percentile(self.latencies, 99) * 1000, statistics.median(self.cpu_us),
                      posts)


async def measure_round(mode: Mode, n: int, concurrency: int) -> None:
    assert mode.envoy is not None
    cpu0 = mode.envoy.cpu_seconds()
    mode.latencies += await load(mode.gateway.url, n, concurrency)
    mode.cpu_us.append((mode.envoy.cpu_seconds() - cpu0) / n * 1e6)


async def measure(modes: list[Mode], args: argparse.Namespace) -> None:
    """Rounds over the modes in turn, so drift and neighbours' load hit all of them alike;
    the CPU figure of a mode is the median of its rounds."""
    for mode in modes:
        await load(mode.gateway.url, args.warmup, args.concurrency)
    for _ in range(args.rounds):
        for mode in modes:
            await measure_round(mode, args.n // args.rounds, args.concurrency)
    await asyncio.sleep(1.5)  # the last batch waits for batch_age_ms and the next callback
    for mode in modes:
        await load(mode.gateway.url, 1, 1)


# --floor: the Lua filter with callbacks that do nothing, i.e. what Envoy spends on running
# any Lua per request (a coroutine and a handle per callback); the plugin cannot go below it
EMPTY_LUA = "function envoy_on_request(h) end\nfunction envoy_on_response(h) end\n"


def make_modes(ports: dict[str, int], args: argparse.Namespace) -> list[Mode]:
    def gateway(lua: bool, batch: int, response_body: bool = True,
                source: str | None = None) -> Gateway:
        return Gateway(app_port=ports["app"], mirror_port=ports["mirror"],
                       batch_port=ports["batch"], token=args.token, lua=lua, mirror=False,
                       batch_size=batch, capture_response_body=response_body,
                       lua_source=source)

    floor = [Mode("empty Lua filter", gateway(True, 1, source=EMPTY_LUA))] if args.floor else []
    return [Mode("no plugin", gateway(False, 1)), *floor,
            Mode("plugin, batch 1", gateway(True, 1)),
            Mode(f"plugin, batch {args.batch}", gateway(True, args.batch)),
            Mode(f"batch {args.batch}, no resp body", gateway(True, args.batch, False))]


def run_modes(modes: list[Mode], workdir: Path, args: argparse.Namespace) -> list[Result]:
    for mode in modes:
        mode.envoy = start_envoy(mode.gateway, workdir)
    with running(*[m.envoy for m in modes if m.envoy]):
        asyncio.run(measure(modes, args))
        time.sleep(0.5)
        results = []
        for mode in modes:
            stats = envoy_stats(mode.gateway)
            posts = stats.get("cluster.oob_batch.upstream_rq_total", 0)
            print(f"  {mode.name}: batch POSTs {posts}, 2xx "
                  f"{stats.get('cluster.oob_batch.upstream_rq_2xx', 0)}", file=sys.stderr)
            results.append(mode.result(posts))
    return results


def report(results: list[Result], args: argparse.Namespace) -> None:
    base = results[0]
    print(f"\nEnvoy 1.40, 1 worker, {args.n} requests per mode in {args.rounds} interleaved "
          f"rounds, concurrency {args.concurrency} (3 GET : 1 POST 2 KB)")
    print(f"{'mode':<22} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'CPU ratio':>10} "
          f"{'POSTs':>7}")
    for r in results:
        print(f"{r.mode:<22} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.cpu_us:>11.1f} "
              f"{r.cpu_us / base.cpu_us:>9.2f}x {r.posts:>7}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5000, help="measured requests per mode")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode")
    p.add_argument("--batch", type=int, default=50, help="batch size of the batched mode")
    p.add_argument("--batch-port", type=int, help="a real node's batch listener port")
    p.add_argument("--floor", action="store_true",
                   help="also measure an empty Lua filter (Envoy's own cost of running Lua)")
    p.add_argument("--token", default="bench-token")
    p.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # internal: run the sink
    args = p.parse_args()
    if args.sink:
        sink_main(args.sink)
        return
    with tempfile.TemporaryDirectory(prefix="envoy-bench-") as tmp:
        workdir = Path(tmp)
        ports = {"app": free_port(), "mirror": free_port(),
                 "batch": args.batch_port or free_port()}
        demo = start_demo(ports["app"], workdir)
        procs = [demo]
        if args.batch_port is None:
            sink = Proc([sys.executable, __file__, "--sink", str(ports["batch"])],
                        workdir / "sink.log")
            procs.append(sink)
            wait_port(ports["batch"], proc=sink.proc)
        with running(*procs):
            results = run_modes(make_modes(ports, args), workdir, args)
    report(results, args)


if __name__ == "__main__":
    main()
