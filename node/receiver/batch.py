"""The batch listener (``receiver.batch_listen``, :8446): ``POST /v1/batch`` from the Envoy Lua
plugin, plus ``/healthz``, ``/readyz`` and ``/metrics`` of the receiver role.

Where it sits: the plugin posts msgpack ``{"v": 1, "records": [...]}`` with a bearer token;
each valid record goes to the stream writer, as a mirrored request does. Each record is first
offered to the C-validated fast path (``batch_fast``); one it declines is unpacked alone and
checked in Python (``batch_record``), which rejects it with a message naming the field.

Answers (DESIGN.md "Lua batch wire format"): 202 ``{"accepted", "rejected", "errors":
[{"index", "error"}]}``; 400 not msgpack or not that shape; 401 without the right token (and
always when no batch token is configured); 413 above ``max_batch_bytes`` (Content-Length or
bytes read) or ``max_batch_records``; 503 when the writer is shedding (nothing queued: the
plugin drops and counts, it never retries into the request path).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
from aiohttp import web
from msgspec import Raw
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from node.ids import UlidGenerator
from node.queue.buffer import count_sources
from node.receiver.batch_fast import PIECES, FastRecords, record_spans
from node.receiver.batch_record import BatchRecordBuilder, RecordError
from node.receiver.context import ReceiverContext


@dataclass
class Inflight:
    """Batches being read or checked right now (``receiver.max_inflight`` bounds it)."""

    count: int = 0


class BatchRejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class Packed:
    """A batch's valid records as runs for the writer (``node.queue.buffer``): ``runs[i]`` is
    ``counts[i]`` packed records back to back, ``sources[i]`` their sources; plus the errors
    ``{"index", "error"}`` of the records rejected."""

    runs: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    sources: list[dict[str, int]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Packed) -> None:
        self.runs += other.runs
        self.counts += other.counts
        self.sources += other.sources
        self.errors += other.errors


@dataclass(frozen=True)
class Packers:
    """Per-record work of a batch: the fast path, else the record alone through Python."""

    fast: FastRecords
    full: BatchRecordBuilder
    ids: UlidGenerator
    max_bytes: int
    max_records: int
    per_run: int  # records per run: queue.records_per_entry, at most SLICE_RECORDS

    @property
    def slice_records(self) -> int:
        """Records packed between two turns of the event loop: whole runs, ~SLICE_RECORDS."""
        return self.per_run * max(1, SLICE_RECORDS // self.per_run)

    def pack_slice(self, spans: Sequence[Raw | bytes], peer: str, first: int = 0) -> Packed:
        """The valid records of ``spans`` in order, in runs of at most ``per_run``, and the
        errors (``first``: the index of ``spans[0]`` in the batch); BatchRejected for bytes
        that are not msgpack (as when the whole batch was unpacked at once). Records the fast
        path declines get their ids after the others."""
        pieces, sources = self.fast.pack_many(spans, peer, self.ids.many(len(spans)))
        packed = Packed()
        if None in sources:
            packed.errors = self._declined(spans, pieces, sources, peer, first)
        for start in range(0, len(spans), self.per_run):
            end = start + self.per_run
            kept = sources[start:end]
            if packed.errors:
                kept = [source for source in kept if source is not None]
                if not kept:
                    continue
            packed.runs.append(b"".join(pieces[start * PIECES:end * PIECES]))
            packed.counts.append(len(kept))
            packed.sources.append(_sources(kept))  # type: ignore[arg-type]
        return packed

    def _declined(self, spans: Sequence[Raw | bytes], pieces: list[bytes | memoryview],
                  sources: list[str | None], peer: str, first: int) -> list[dict[str, Any]]:
        """The records the fast path declined, through Python: packed into their place in
        ``pieces`` (and ``sources``), or left out and listed as errors."""
        errors: list[dict[str, Any]] = []
        for i, span in enumerate(spans):
            if sources[i] is None:
                try:
                    pieces[i * PIECES], sources[i] = self._full(span, peer)
                except RecordError as exc:
                    errors.append({"index": first + i, "error": str(exc)})
        return errors

    def _full(self, span: Raw | bytes, peer: str) -> tuple[bytes, str]:
        raw = bytes(span)
        item, lossy = unpack_record(raw, self.max_bytes, self.max_records)
        return self.full.pack(item, raw, peer, lossy)


def _sources(sources: list[str]) -> dict[str, int]:
    """Records by source of one run (all from the same source, but for mixed batches)."""
    first = sources[0]
    return {first: len(sources)} if sources.count(first) == len(sources) else \
        dict(Counter(sources))


CTX = web.AppKey("receiver_context", ReceiverContext)
PACKERS = web.AppKey("batch_packers", Packers)
INFLIGHT = web.AppKey("batch_inflight", Inflight)
MAX_ERRORS_LISTED = 100  # the answer stays small whatever the batch
MAX_MAP_LEN = 1024  # keys of one msgpack map (records have ~20 fields)
SLICE_RECORDS = 128  # about the records packed between two turns of the event loop (~1 ms)


def make_batch_app(ctx: ReceiverContext) -> web.Application:
    app = web.Application()
    app[CTX] = ctx
    rcv = ctx.cfg.receiver
    app[PACKERS] = Packers(FastRecords(rcv, ctx.realip),
                           BatchRecordBuilder(rcv, ctx.realip, ctx.ids.new), ctx.ids,
                           rcv.max_batch_bytes, rcv.max_batch_records,
                           min(ctx.cfg.queue.records_per_entry, SLICE_RECORDS))
    app[INFLIGHT] = Inflight()
    app.router.add_post("/v1/batch", post_batch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers or None)


def _reject(ctx: ReceiverContext, exc: BatchRejected) -> web.Response:
    ctx.metrics.rejected.labels(exc.reason).inc()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return _json(exc.status, {"error": str(exc)}, **headers)


async def post_batch(request: web.Request) -> web.Response:
    ctx, inflight = request.app[CTX], request.app[INFLIGHT]
    inflight.count += 1
    try:
        return await _handle_batch(ctx, request, inflight.count)
    finally:
        inflight.count -= 1


async def _handle_batch(ctx: ReceiverContext, request: web.Request,
                        inflight: int) -> web.Response:
    try:
        _check_token(ctx, request)
        _check_capacity(ctx, request, inflight)
        body = await _read_body(request, ctx.cfg.receiver.max_batch_bytes)
        packers = request.app[PACKERS]
        with _no_gc():
            spans = unpack_batch(body, packers.max_bytes, packers.max_records)
        return _accept(ctx, await _pack_slices(packers, spans, _peer(request)))
    except BatchRejected as exc:
        return _reject(ctx, exc)


async def _pack_slices(packers: Packers, spans: Sequence[Raw | bytes], peer: str) -> Packed:
    """``Packers.pack_slice`` a slice at a time, letting the event loop turn in between: the
    stream writer sends to Redis at most a socket buffer per turn, so a big batch held for
    milliseconds would hold its writes back and the buffer would only grow."""
    packed = Packed()
    step = packers.slice_records
    for start in range(0, len(spans), step):
        if start:
            await asyncio.sleep(0)
        with _no_gc():
            packed.add(packers.pack_slice(spans[start:start + step], peer, start))
    return packed


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Unpacking and checking a batch allocates thousands of containers and no cycles; the
    cyclic GC would run many collections over them for nothing (~30% of the CPU of a batch).
    Synchronous code only: no other task runs while it is off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_token(ctx: ReceiverContext, request: web.Request) -> None:
    expected = ctx.batch_token
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    # SECURITY: constant-time comparison; no configured token means no batch is accepted.
    ok = (expected is not None and scheme.lower() == "bearer"
          and hmac.compare_digest(token.strip().encode(), expected.encode()))
    if not ok:
        raise BatchRejected(401, "unauthorized", "missing or wrong bearer token")


def _check_capacity(ctx: ReceiverContext, request: web.Request, inflight: int) -> None:
    length = request.content_length
    if length is not None and length > ctx.cfg.receiver.max_batch_bytes:
        raise BatchRejected(413, "too_large", "batch larger than max_batch_bytes")
    # SECURITY: bounded concurrency (memory: each batch in progress holds its body).
    if inflight > ctx.cfg.receiver.max_inflight or ctx.writer.shed_reason() is not None:
        raise BatchRejected(503, "overloaded", "node overloaded; batch not accepted")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, read as the chunks that arrived (``readchunk``: no copy before the one join)
    and refused as soon as it passes ``limit`` (chunked uploads have no Content-Length to
    check up front)."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk, end_of_http_chunk = await request.content.readchunk()
        if not chunk:
            if end_of_http_chunk:
                continue
            return b"".join(parts)
        size += len(chunk)
        if size > limit:  # SECURITY: memory bound for a hostile or broken sender
            raise BatchRejected(413, "too_large", "batch larger than max_batch_bytes")
        parts.append(chunk)


def unpack_batch(body: bytes, max_bytes: int, max_records: int) -> Sequence[Raw | bytes]:
    """The bytes of each record, or BatchRejected (400 / 413). The records themselves are
    unpacked one by one later (``Packers.pack``)."""
    spans = record_spans(body, max_records)  # the common shape, split in C
    if spans is not None:
        return spans
    # SECURITY: explicit limits so a hostile batch cannot make the unpacker allocate more
    # than the body's size suggests; no ext types, no non-string map keys.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True,
                                max_buffer_size=max(1, len(body)), **_limits(max_bytes,
                                                                             max_records))
    unpacker.feed(body)
    try:
        records, version = _read_batch(unpacker, body, max_records)
    except BatchRejected:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _unpack_error(exc) from None
    if version != 1 or records is None:
        raise BatchRejected(400, "bad_shape", 'expected a map {"v": 1, "records": [...]}')
    return records


def unpack_record(raw: bytes, max_bytes: int, max_records: int) -> tuple[Any, bool]:
    """(one record unpacked, lossy?) or BatchRejected (400 / 413). Lossy: a text was a
    msgpack str that is not UTF-8 (Lua strings are bytes), decoded with surrogateescape;
    ``batch_record.check_text`` turns it back into the exact bytes."""
    try:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True,
                                   **_limits(max_bytes, max_records)), False
        except UnicodeDecodeError:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True,
                                   unicode_errors="surrogateescape",
                                   **_limits(max_bytes, max_records)), True
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _unpack_error(exc) from None


def _limits(max_bytes: int, max_records: int) -> dict[str, int]:
    return {"max_str_len": max_bytes, "max_bin_len": max_bytes, "max_ext_len": 0,
            "max_array_len": max(max_records, 4096), "max_map_len": MAX_MAP_LEN}


def _unpack_error(exc: Exception) -> BatchRejected:
    message = str(exc)
    too_big = "exceeds max_" in message and "max_ext_len" not in message
    if too_big:
        return BatchRejected(413, "too_large", "batch exceeds the unpack limits")
    return BatchRejected(400, "bad_msgpack", "body is not a msgpack document")


def _read_batch(unpacker: msgpack.Unpacker, body: bytes,
                max_records: int) -> tuple[list[bytes] | None, Any]:
    """Walk the top-level map, keeping the byte span of each record of the first "records"."""
    try:
        keys = unpacker.read_map_header()
    except ValueError:
        msgpack.unpackb(body)  # raises when it is not msgpack at all: bad_msgpack
        raise BatchRejected(400, "bad_shape", 'expected a map {"v": 1, "records": [...]}') \
            from None
    records: list[bytes] | None = None
    version = None
    for _ in range(keys):
        key = unpacker.unpack()
        if key == "records" and records is None:
            records = _read_records(unpacker, body, max_records)
        elif key == "v":
            version = unpacker.unpack()
        else:
            unpacker.skip()
    if unpacker.tell() != len(body):
        raise BatchRejected(400, "bad_msgpack", "data after the batch")
    return records, version


def _read_records(unpacker: msgpack.Unpacker, body: bytes, max_records: int) -> list[bytes]:
    try:
        count = unpacker.read_array_header()
    except ValueError:
        raise BatchRejected(400, "bad_shape", '"records" must be an array') from None
    if count > max_records:
        raise BatchRejected(413, "too_many_records", "more records than max_batch_records")
    out = []
    start = unpacker.tell()
    for _ in range(count):
        unpacker.skip()
        end = unpacker.tell()
        out.append(body[start:end])
        start = end
    return out


def _accept(ctx: ReceiverContext, packed: Packed) -> web.Response:
    errors, accepted = packed.errors, sum(packed.counts)
    if errors:
        ctx.metrics.rejected.labels("bad_record").inc(len(errors))
    if accepted:
        for source, n in count_sources(packed.sources).items():
            ctx.metrics.received.labels(source).inc(n)
        size = sum(map(len, packed.runs))
        if ctx.writer.offer_runs(packed.runs, packed.counts, packed.sources, size) is not None:
            return _json(503, {"error": "node overloaded; batch not accepted"})
    return _json(202, {"accepted": accepted, "rejected": len(errors),
                       "errors": errors[:MAX_ERRORS_LISTED]})


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers (the receiver sheds everything otherwise)."""
    ctx = request.app[CTX]
    try:
        await asyncio.wait_for(ctx.redis.ping(), ctx.cfg.redis.socket_timeout_s)
    except (RedisError, OSError, TimeoutError):
        return _json(503, {"status": "redis unreachable"})
    return _json(200, {"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ctx.metrics.buffered.set(ctx.writer.buffered)
    return web.Response(body=generate_latest(ctx.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
