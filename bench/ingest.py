"""Ingestion throughput on one receiver core: the mirror path next to a bare aiohttp handler,
and the batch path in records/s.

Each server runs in its own process pinned to one CPU (``--server-cpu``); the load generator
(raw asyncio sockets, keep-alive, N connections, one request in flight per connection) and the
embedded Redis share the other CPUs. Rounds alternate bare / mirror / batch so a noisy machine
affects them alike; the median of the rounds is reported, plus the server's own CPU time per
request (from /proc), which is what "requests/s on one core" means when the machine is shared.
For the receiver that CPU runs from an empty stream-writer buffer to an empty one, so it
includes writing to Redis every record answered (Redis, next to the load generator, can lag).

    .venv/bin/python bench/ingest.py [--seconds 5] [--rounds 3] [--connections 64]
                                     [--event-loop uvloop asyncio]

Both servers run on the node's configured event loop (``event_loop``, uvloop by default);
with two loops given, each gets its own pair of servers, the rounds alternate between them
and the CPU ratio of the loops is printed.

Goals (issue 2): mirror >= 75% of bare; batch >= 100,000 records/s on one receiver core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack

from node.config import EVENT_LOOPS, NodeConfig

TOKEN = "bench-token"
JSON_BODY = (b'{"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"coupon":"WELCOME10",'
             b'"note":"leave at the door please, thank you!!"}')
MIRROR_REQUESTS = [
    (b"GET /search?q=running+shoes&page=2&sort=price HTTP/1.1\r\n"
     b"Host: shop.example-shadow:8080\r\n"
     b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0\r\n"
     b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\n"
     b"Cookie: session=3f9a0c2e7b; theme=dark\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.5\r\n"
     b"X-Forwarded-Proto: https\r\nX-Request-Id: 9f0c6b1e-4f1a-4a53-9d38-1a2b3c4d5e6f\r\n"
     b"x-envoy-internal: true\r\nx-envoy-expected-rq-timeout-ms: 15000\r\n\r\n"),
    (b"POST /api/cart HTTP/1.1\r\nHost: shop.example-shadow:8080\r\n"
     b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r\n"
     b"Content-Type: application/json\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.5\r\n"
     b"X-Request-Id: 1b2c3d4e-0000-4a53-9d38-1a2b3c4d5e6f\r\nx-envoy-internal: true\r\n"
     b"Content-Length: %d\r\n\r\n%s" % (len(JSON_BODY), JSON_BODY)),
]


def lua_record(i: int) -> dict:
    return {"ts": time.time(), "source": "lua", "request_id": f"{i:08d}-4f1a-4a53-9d38",
            "method": "GET", "scheme": "https", "host": "shop.example", "port": 443,
            "path": "/search", "query": f"q=item{i}&page=2", "http_version": "1.1",
            "headers": [["host", "shop.example"], ["user-agent", "Mozilla/5.0 Chrome/120.0"],
                        ["accept", "*/*"], ["x-forwarded-for", "203.0.113.7"],
                        ["x-request-id", f"{i:08d}-4f1a-4a53-9d38"]],
            "body": b"", "body_size": 0, "body_truncated": False,
            "response": {"status": 200, "headers": [["content-type", "text/html"],
                                                    ["content-length", "5120"]],
                         "body": b"", "body_size": 5120, "body_truncated": True},
            "meta": {"cluster": "outbound|8080||shop", "route": "default",
                     "direct_remote_address": "10.0.0.5:51234", "duration_ms": 3.2}}


def batch_request(records: int) -> bytes:
    body = msgpack.packb({"v": 1, "records": [lua_record(i) for i in range(records)]},
                         use_bin_type=True)
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/msgpack\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# ---------------------------------------------------------------- servers (child processes)

def serve_bare(port: int, loop: str) -> None:
    from aiohttp import web

    if loop == "uvloop":  # run_app makes its loop with asyncio.new_event_loop()
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def catch_all(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", catch_all)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_receiver(redis_url: str, mirror_port: int, batch_port: int, loop: str) -> None:
    from node import eventloop
    from node.config import build_config
    from node.receiver.service import serve

    cfg = build_config(None, env={}, overrides={
        "event_loop": loop, "redis.url": redis_url, "redis.prefix": f"bench-{loop}",
        "receiver.batch_token": TOKEN,
        "receiver.mirror_listen": f"127.0.0.1:{mirror_port}",
        "receiver.batch_listen": f"127.0.0.1:{batch_port}",
        "receiver.max_inflight": 4096, "queue.high_water": 10_000_000,
        # Redis shares a busy CPU with the load generator: allow slow replies, keep it small.
        "redis.socket_timeout_s": 10, "queue.requests_maxlen": 2000,
        "queue.max_buffered_records": 200_000})

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(cfg, stop)

    profile = os.environ.get("OOB_BENCH_PROFILE")  # write cProfile stats of the server here
    if profile:
        import cProfile

        cProfile.runctx("eventloop.run(run(), loop)", globals(), locals(), profile)
    else:
        eventloop.run(run(), loop)


# ---------------------------------------------------------------- load generator

@dataclass
class _Load:
    """Shared by a run's connections: answers counted, requests still unanswered."""

    answers: int = 0  # answers with the marker (e.g. 202: the records were accepted)
    in_flight: int = 0
    sending: bool = True


class _Conn(asyncio.Protocol):
    def __init__(self, requests: list[bytes], marker: bytes, load: _Load) -> None:
        self.requests, self.marker, self.load, self.i = requests, marker, load, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.load.in_flight += 1
        self.transport.write(self.requests[self.i % len(self.requests)])  # type: ignore
        self.i += 1

    def data_received(self, data: bytes) -> None:
        # Any answer (a 503 too) lets this connection send its next request.
        answered = data.count(b"HTTP/1.1 ")
        self.load.answers += data.count(self.marker)
        self.load.in_flight -= answered
        if answered and self.load.sending:
            self._send()


async def run_load(port: int, requests: list[bytes], marker: bytes, connections: int,
                   seconds: float) -> tuple[float, int]:
    """(marked answers per second during ``seconds``, marked answers in all): the requests
    still on their way at the end are answered before the connections close."""
    loop = asyncio.get_running_loop()
    load = _Load()
    transports = [(await loop.create_connection(lambda: _Conn(requests, marker, load),
                                                "127.0.0.1", port))[0]
                  for _ in range(connections)]
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    rate = load.answers / (time.perf_counter() - t0)
    load.sending = False
    deadline = loop.time() + 30
    while load.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.1)
    return rate, load.answers


async def drained(metrics_port: int, timeout: float = 60.0) -> None:
    """Until the receiver's stream writer has written everything it buffered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        text = (await reader.read()).decode()
        writer.close()
        if "\noob_receiver_buffered_records 0.0" in text:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the receiver did not drain its buffer")


async def drive(port: int, requests: list[bytes], marker: bytes, connections: int,
                seconds: float, pid: int, metrics_port: int | None = None) -> tuple[float, float]:
    """(answers per second, server CPU seconds per answer) over ``seconds`` after a 1 s
    warm-up. For the receiver (``metrics_port``: its batch listener), the measure starts and
    ends with its stream writer's buffer empty: the CPU covers writing to Redis every record
    answered, also when Redis (sharing a CPU with the load generator) lags."""
    await run_load(port, requests, marker, connections, 1.0)  # warm-up
    if metrics_port is not None:
        await drained(metrics_port)
    cpu0 = cpu_seconds(pid)
    rate, answers = await run_load(port, requests, marker, connections, seconds)
    if metrics_port is not None:
        await drained(metrics_port)
    return rate, (cpu_seconds(pid) - cpu0) / max(1, answers)


def calibration_us() -> float:
    """CPU time of a fixed pure-Python loop, to compare figures across machines (a recent
    desktop core: ~8 us)."""
    start = time.process_time()
    for _ in range(2000):
        sum(range(1000))
    return (time.process_time() - start) / 2000 * 1e6


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- orchestration

@dataclass
class Result:
    rates: list[float]
    cpu: list[float]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_us(self) -> float:
        return statistics.median(self.cpu) * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def spawn(args: list[str], cpu: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--server-cpu", str(cpu), *args])


@dataclass(frozen=True)
class Servers:
    """One event loop's pair of server processes: the bare handler and the receiver."""

    loop: str
    ports: dict[str, int]  # bare, mirror, batch
    pids: dict[str, int]  # the same keys; mirror and batch are one receiver process


async def rounds(args: argparse.Namespace, servers: list[Servers]) -> dict[str, Result]:
    """Results by "<path>" (one loop) or "<path> <loop>"; every round runs every path on
    every loop, in turn."""
    batch = batch_request(args.batch_records)
    requests = {"bare": (MIRROR_REQUESTS, b"HTTP/1.1 200", args.connections),
                "mirror": (MIRROR_REQUESTS, b"HTTP/1.1 200", args.connections),
                "batch": ([batch], b"HTTP/1.1 202", args.batch_connections)}
    results: dict[str, Result] = {}
    for r in range(args.rounds):
        for path in (p for p in requests if p in args.only):
            for srv in servers:
                name = path if len(servers) == 1 else f"{path} {srv.loop}"
                reqs, marker, conns = requests[path]
                rate, cpu = await drive(srv.ports[path], reqs, marker, conns, args.seconds,
                                        srv.pids[path],
                                        None if path == "bare" else srv.ports["batch"])
                if path == "batch":
                    rate, cpu = rate * args.batch_records, cpu / args.batch_records
                res = results.setdefault(name, Result([], []))
                res.rates.append(rate)
                res.cpu.append(cpu)
                print(f"  round {r + 1} {name:<14} {rate:>10,.0f}/s  "
                      f"server CPU {cpu * 1e6:7.1f} us", flush=True)
    return results


def report(results: dict[str, Result], loops: list[str]) -> None:
    for loop in loops:
        suffix = "" if len(loops) == 1 else f" {loop}"
        bare, mirror, batch = (results.get(p + suffix) for p in ("bare", "mirror", "batch"))
        print(f"\n{loop} event loop\npath                     rate (median)        "
              "server CPU    capacity of 1 core")
        for name, res, unit in (("bare aiohttp catch-all", bare, "req"),
                                ("mirror listener", mirror, "req"),
                                ("batch listener", batch, "record")):
            if res is not None:
                print(f"{name:<24} {res.rate:>10,.0f} {unit}/s  {res.cpu_us:8.1f} us/{unit:<6} "
                      f"{1e6 / res.cpu_us:>10,.0f} {unit}/s")
        if bare and mirror:
            print(f"mirror / bare: {mirror.rate / bare.rate:.0%} of the requests/s, "
                  f"{bare.cpu_us / mirror.cpu_us:.0%} by server CPU per request (goal >= 75%)")
        if batch:
            print(f"batch: {batch.rate:,.0f} records/s measured, {1e6 / batch.cpu_us:,.0f} "
                  "records/s per receiver core by CPU (goal >= 100,000)")
    if len(loops) == 2:
        first, second = loops
        print(f"\nserver CPU per request, {first} / {second}: " + ", ".join(
            f"{path} {results[f'{path} {first}'].cpu_us / results[f'{path} {second}'].cpu_us:.2f}"
            for path in ("bare", "mirror", "batch") if f"{path} {first}" in results))


def start_servers(loop: str, redis_url: str,
                  cpu: int) -> tuple[Servers, list[subprocess.Popen[bytes]]]:
    ports = {"bare": free_port(), "mirror": free_port(), "batch": free_port()}
    bare = spawn(["--serve", "bare", str(ports["bare"]), loop], cpu)
    receiver = spawn(["--serve", "receiver", redis_url, str(ports["mirror"]),
                      str(ports["batch"]), loop], cpu)
    for port in ports.values():
        wait_port(port)
    pids = {"bare": bare.pid, "mirror": receiver.pid, "batch": receiver.pid}
    return Servers(loop, ports, pids), [bare, receiver]


def main(args: argparse.Namespace) -> None:
    from node.queue.embedded import EmbeddedRedis

    load_cpus = set(os.sched_getaffinity(0)) - {args.server_cpu} or {args.server_cpu}
    os.sched_setaffinity(0, load_cpus)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as redis:
        if redis.process is not None:
            os.sched_setaffinity(redis.process.pid, load_cpus)
        try:
            servers = []
            for loop in args.event_loop:
                srv, started = start_servers(loop, redis.url, args.server_cpu)
                servers.append(srv)
                procs += started
            print(f"server CPU {args.server_cpu}, load generator + Redis on {sorted(load_cpus)}; "
                  f"{args.rounds} rounds of {args.seconds:g} s; machine speed: "
                  f"sum(range(1000)) takes {calibration_us():.1f} us of CPU")
            report(asyncio.run(rounds(args, servers)), args.event_loop)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(15)


def child(argv: list[str]) -> None:
    cpu = int(argv[argv.index("--server-cpu") + 1])
    os.sched_setaffinity(0, {cpu})
    serve_args = argv[argv.index("--serve") + 1:]
    if serve_args[0] == "bare":
        serve_bare(int(serve_args[1]), serve_args[2])
    else:
        serve_receiver(serve_args[1], int(serve_args[2]), int(serve_args[3]), serve_args[4])


if __name__ == "__main__":
    if "--serve" in sys.argv:
        child(sys.argv[1:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--batch-records", type=int, default=500)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=["bare", "mirror", "batch"],
                        choices=["bare", "mirror", "batch"], help="run only these paths")
    parser.add_argument("--event-loop", nargs="+", choices=EVENT_LOOPS,
                        default=[NodeConfig().event_loop],
                        help="event loop(s) of the servers (default: the node's default)")
    main(parser.parse_args())
