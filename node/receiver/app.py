"""Factories of the receiver's two listeners, both served through aiohttp runners/TCPSites.

- ``mirror_runner(ctx)``: the mirror listener (hostile input, no routes; see ``mirror``).
- ``batch_runner(ctx)``: the batch listener app (``/v1/batch``, health, metrics; see ``batch``).

``service.serve`` starts both with one ``web.TCPSite`` each; tests start them on port 0.
"""

from __future__ import annotations

from aiohttp import web

from node.receiver.batch import make_batch_app
from node.receiver.context import ReceiverContext
from node.receiver.mirror import MirrorRunner, MirrorServer

SHUTDOWN_TIMEOUT_S = 5.0


def mirror_runner(ctx: ReceiverContext) -> MirrorRunner:
    return MirrorRunner(MirrorServer(ctx), shutdown_timeout=SHUTDOWN_TIMEOUT_S)


def batch_runner(ctx: ReceiverContext) -> web.AppRunner:
    rcv = ctx.cfg.receiver
    # SECURITY: no auto-decompression (a compressed batch would be a decompression bomb
    # vector and is not part of the wire format); no access log on the hot path.
    return web.AppRunner(make_batch_app(ctx), access_log=None, auto_decompress=False,
                         max_field_size=rcv.max_header_bytes,
                         max_line_size=rcv.max_header_bytes,
                         max_headers=rcv.max_header_count,
                         shutdown_timeout=SHUTDOWN_TIMEOUT_S)
