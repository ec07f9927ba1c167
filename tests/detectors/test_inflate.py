"""Content codings undone before scanning, bounded, and never losing a body that lies."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import brotli
import pytest

from node.detectors.inflate import MAX_CODINGS, inflate

TEXT = b"root:x:0:0:root:/root:/bin/bash\n" * 4


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


CODINGS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),  # the zlib format HTTP means
    ("deflate", _deflate_raw),  # what some servers send instead
    ("br", brotli.compress),
    ("GZIP", gzip.compress),  # codings are case-insensitive
    ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),  # applied in listed order
    ("identity, br", brotli.compress),
]


@pytest.mark.parametrize("coding,encode", CODINGS, ids=[c for c, _ in CODINGS])
def test_codings_are_undone(coding: str, encode: Callable[[bytes], bytes]) -> None:
    assert inflate(encode(TEXT), coding, 1 << 20) == TEXT


@pytest.mark.parametrize("coding,body", [
    ("gzip", b"not gzip at all"),  # a lying header
    ("br", b"\xff\xfe not brotli"),
    ("compress", gzip.compress(TEXT)),  # unknown coding: nothing is guessed
    ("gzip, " * MAX_CODINGS + "br", gzip.compress(TEXT)),  # too many layers
    ("", gzip.compress(TEXT)),
])
def test_bodies_that_do_not_decode_are_kept_as_sent(coding: str, body: bytes) -> None:
    assert inflate(body, coding, 1 << 20) == body


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("br", brotli.compress)])
def test_bombs_stop_at_the_cap(coding: str, encode: Callable[[bytes], bytes]) -> None:
    bomb = encode(b"A" * 50_000_000)  # 50 MB from tens of KB
    out = inflate(bomb, coding, 65536)
    assert out == b"A" * 65536


def test_truncated_stream_gives_what_decodes() -> None:
    body = gzip.compress(TEXT * 200)
    out = inflate(body[: len(body) // 2], "gzip", 1 << 20)
    assert out and (TEXT * 200).startswith(out)
