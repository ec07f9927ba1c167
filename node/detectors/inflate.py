"""Content codings undone before anything looks at a body: ``gzip``, ``deflate`` and ``br``.

Used by ``points.py`` on request bodies (``Content-Encoding`` of the request) and by
``processing/enrich.py`` on the response bodies the Lua plugin captures (searched for
success markers, ``evidence.py``): a compressed answer would otherwise hide
``root:x:0:0`` from the outcome. Never done by the listeners (DESIGN: decoding is a bounded
step of processing).

# SECURITY: every decoder stops at ``cap`` output bytes (a decompression bomb costs at most
that), at most ``MAX_CODINGS`` codings are undone, and a body that does not decode (a fake
``gzip``, an unknown coding) is kept as sent. A truncated stream (a body cut at
``max_body_bytes``) gives what decodes of it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli

MAX_CODINGS = 2  # "gzip, br" exists; longer chains are not worth the work


def _zlib(body: bytes, cap: int) -> bytes | None:
    for wbits in (47, -15):  # 47: zlib or gzip header, detected; -15: raw deflate (old IIS)
        try:
            out = zlib.decompressobj(wbits).decompress(body, cap)
        except zlib.error:
            continue
        if out:
            return out
    return None


def _brotli(body: bytes, cap: int) -> bytes | None:
    try:
        out = brotli.Decompressor().process(body, output_buffer_limit=cap)
    except brotli.error:
        return None
    return out[:cap] or None


DECODERS: dict[str, Callable[[bytes, int], bytes | None]] = {
    "gzip": _zlib, "x-gzip": _zlib, "deflate": _zlib, "br": _brotli,
}


def inflate(body: bytes, coding: str, cap: int) -> bytes:
    """``body`` with its content codings (a ``Content-Encoding`` value, applied in the order
    listed) undone, at most ``cap`` bytes; as sent when it does not decode."""
    if not body or not coding:
        return body
    codings = [c.strip() for c in coding.lower().split(",") if c.strip() not in ("", "identity")]
    if not codings or len(codings) > MAX_CODINGS:
        return body
    out = body
    for name in reversed(codings):
        decoder = DECODERS.get(name)
        decoded = decoder(out, cap) if decoder is not None else None
        if decoded is None:
            return body
        out = decoded
    return out
