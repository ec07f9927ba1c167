"""The mirror listener (``receiver.mirror_listen``, :8445): every request is one mirrored copy.

Where it sits: Envoy (Istio ``mirror:``) sends a copy of each production request here;
``MirrorProtocol`` parses it (``http1``), builds the record (``mirror_record``) and offers it
to the stream writer, then answers ``200`` with an empty body. That answer never depends on
Redis or the queue: when they are slow or down the record is shed and counted, the copy is
still read in full and answered at once.

SECURITY: everything arriving here is attacker-controlled by definition. No method, path or
header is ever interpreted as a command: this listener has no routes, no API, no batches (those
live on the batch listener behind a token). Its only outputs are a fixed status line and a
record in the queue.

Why a plain ``asyncio.Protocol`` and not an aiohttp handler: aiohttp's llhttp parser refuses
what a proxy may legally forward (custom methods, raw bytes >= 0x80 in the path, see
``http1``), and aiohttp's request machinery (router, Request object, auto-decompression)
is most of the cost per request on this hot path. It still plugs into aiohttp's
``TCPSite`` through ``MirrorRunner`` so the service starts both listeners the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from aiohttp import web

from node.logs import safe
from node.receiver.context import ReceiverContext
from node.receiver.http1 import HttpError, Request, RequestParser
from node.receiver.mirror_record import MirrorRecordBuilder

log = logging.getLogger(__name__)

_OK = {
    ("1.1", True): b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ("1.0", True): b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
}
_OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def _error_response(status: int) -> bytes:
    phrase = _PHRASES.get(status, "Bad Request")
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


class MirrorProtocol(asyncio.Protocol):
    """One connection. Everything runs synchronously in ``data_received``: reading never
    waits for the queue, so a body is always drained at the speed the sender writes it."""

    def __init__(self, server: MirrorServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.last_seen = 0.0
        rcv = server.ctx.cfg.receiver
        self.parser = RequestParser(max_head_bytes=rcv.max_head_bytes,
                                    max_line_bytes=rcv.max_header_bytes,
                                    max_headers=rcv.max_header_count,
                                    max_body_bytes=rcv.max_body_bytes,
                                    capture=server.builder.capture)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (asyncio's or uvloop's, which does not subclass it).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.last_seen = self.server.loop.time()
        if not self.server.register(self):
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.unregister(self)
        self.transport = None

    def pause_writing(self) -> None:
        # The peer does not read our (tiny) answers: stop reading until it does. This is the
        # sender's own back-pressure, never the queue's.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.last_seen = self.server.loop.time()
        try:
            requests = self.parser.feed(data)
        except HttpError as exc:
            self._reject(exc)
            return
        except Exception:  # pragma: no cover - a parser bug must not kill the listener
            log.exception("mirror parser failed; connection closed")
            self._reject(HttpError(400, "internal", "parser failure"))
            return
        for req in requests:
            if not self._answer(req):
                return
        if self.parser.expect_continue:
            self.parser.expect_continue = False
            transport.write(_CONTINUE)

    def _answer(self, req: Request) -> bool:
        """Record, queue and answer one request; False when the connection is closed."""
        try:
            self.server.handle(req, self.peer)
        except Exception:  # pragma: no cover - a bug must cost one record, not the answer
            log.exception("mirror record failed")
            self.server.ctx.metrics.rejected.labels("internal").inc()
        assert self.transport is not None
        keep = req.keep_alive and not self.server.closing and \
            req.method not in ("CONNECT", b"CONNECT")  # never a tunnel: close after it
        if keep:
            self.transport.write(_OK[(req.version, True)])
            return True
        self.transport.write(_OK_CLOSE)
        self.transport.close()
        return False

    def _reject(self, exc: HttpError) -> None:
        self.server.ctx.metrics.rejected.labels(exc.reason).inc()
        log.debug("mirror request rejected", extra={"status": exc.status,
                                                    "detail": safe(str(exc)),
                                                    "peer": safe(self.peer)})
        assert self.transport is not None
        self.transport.write(_error_response(exc.status))
        self.transport.close()


class MirrorServer:
    """Protocol factory plus the connection set; the ``server`` of a ``MirrorRunner``."""

    def __init__(self, ctx: ReceiverContext) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.builder = MirrorRecordBuilder(ctx.realip)
        self.connections: set[MirrorProtocol] = set()
        self.closing = False
        self._received = ctx.metrics.received.labels("mirror")
        self._truncated = ctx.metrics.body_truncated
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> MirrorProtocol:
        return MirrorProtocol(self)

    def register(self, proto: MirrorProtocol) -> bool:
        if self.closing or len(self.connections) >= self.ctx.cfg.receiver.max_inflight:
            # SECURITY: bounded connections; the copy is lost, production is unaffected.
            self.ctx.metrics.shed.labels("inflight").inc()
            return False
        self.connections.add(proto)
        return True

    def unregister(self, proto: MirrorProtocol) -> None:
        self.connections.discard(proto)

    def handle(self, req: Request, peer: str) -> None:
        """Build the record and offer it to the writer (never blocks; shed is counted)."""
        self._received.inc()
        if req.body_truncated:
            self._truncated.inc()
        record = self.builder.build(req, peer, self.ctx.ids.new())
        self.ctx.writer.offer(record)

    # ------------------------------------------------------------ lifecycle (aiohttp runner)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="mirror-idle-sweeper")

    async def _sweep(self) -> None:
        """Close connections idle longer than ``idle_timeout_s`` (one timer for all of them,
        not one per connection: cheaper on the hot path)."""
        timeout = self.ctx.cfg.receiver.idle_timeout_s
        while True:
            await asyncio.sleep(min(timeout / 4, 5.0))
            now = self.loop.time()
            for proto in [p for p in self.connections if now - p.last_seen > timeout]:
                if proto.transport is not None:
                    proto.transport.close()

    def pre_shutdown(self) -> None:
        self.closing = True

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now; give those mid-request ``timeout`` to finish."""
        loop = self.loop
        deadline = loop.time() + min(timeout, 5.0)
        while self.connections and loop.time() < deadline:
            for proto in list(self.connections):
                if proto.parser.idle and proto.transport is not None:
                    proto.transport.close()
            await asyncio.sleep(0.05)
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class MirrorRunner(web.BaseRunner):
    """Lets ``web.TCPSite`` serve the mirror protocol like any aiohttp server."""

    def __init__(self, server: MirrorServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mirror = server

    async def _make_server(self) -> Any:
        self._mirror.start()
        return self._mirror

    async def shutdown(self) -> None:
        self._mirror.pre_shutdown()

    async def _cleanup_server(self) -> None:
        pass
