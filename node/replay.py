"""``oob-node replay FILE.jsonl --target host:port``: send a labeled corpus to a mirror port.

Not part of the request flow: a measuring tool. Each corpus line (``node.corpus``) is written
as raw HTTP/1.1 bytes on its own connection, so odd methods, unnormalized paths and header
order reach the receiver exactly as a proxy would forward them (an HTTP client library would
normalize or refuse some). ``x-request-id: <id>`` is added when absent (a case's own
``x-request-id`` is replaced by its ``id`` in place) so hits can be joined back to the
corpus. Concurrency is bounded; every connection has a timeout; the tool only reads the
status line of the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from node.config import NodeConfig
from node.corpus import Case, read_cases, wire_request

TIMEOUT_S = 10.0
MAX_RESPONSE_HEAD = 65536


def parse_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the input."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--target: {target!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


async def send_one(host: str, port: int, payload: bytes, timeout_s: float = TIMEOUT_S) -> int:
    """Write one request, return the answer's status code (0 when none could be read)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(payload)
        await asyncio.wait_for(writer.drain(), timeout_s)
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        parts = line[:MAX_RESPONSE_HEAD].split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout_s)
        except (TimeoutError, OSError):
            pass


async def replay_cases(cases: Sequence[Case], target: str, concurrency: int,
                       timeout_s: float = TIMEOUT_S) -> tuple[int, int]:
    """Send every case; (sent, failed). A case fails on a connection error, a timeout or an
    answer other than 2xx."""
    host, port = parse_target(target)
    limit = asyncio.Semaphore(max(1, concurrency))
    counts = {"sent": 0, "failed": 0}

    async def one(case: Case) -> None:
        async with limit:
            try:
                status = await send_one(host, port, wire_request(case), timeout_s)
            except (TimeoutError, OSError, ValueError):
                status = 0
            counts["sent" if 200 <= status < 300 else "failed"] += 1

    await asyncio.gather(*(one(c) for c in cases))
    return counts["sent"], counts["failed"]


def main(cfg: NodeConfig, args: argparse.Namespace) -> int:
    target = args.target or cfg.receiver.mirror_listen
    path = Path(args.file)
    if not path.is_file():
        print(f"replay: {path}: no such file", file=sys.stderr)
        return 2
    cases = list(read_cases(path))
    sent, failed = asyncio.run(replay_cases(cases, target, args.concurrency))
    print(f"replay: {len(cases)} cases to {target}: {sent} sent, {failed} failed")
    return 0 if failed == 0 else 1
