"""The mirror's HTTP/1 parser: however the bytes are split into reads, the same requests."""

from __future__ import annotations

import random

import pytest

from node.receiver.http1 import HttpError, RequestParser

STREAMS = [
    ("two keep-alive requests", b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n"
     b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", 2),
    ("chunked with extensions and trailers", b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n", 1),
    ("bare LF line endings", b"GET /lf HTTP/1.1\nHost: h\n\n", 1),
    ("mixed line endings", b"GET /mix HTTP/1.1\r\nHost: h\nX: y\r\n\nGET /2 HTTP/1.1\n\r\n", 2),
    ("leading empty lines", b"\r\n\r\nGET /e HTTP/1.0\r\n\r\n", 1),
    ("obsolete line folding", b"GET /f HTTP/1.1\r\nX-Long: a\r\n  b\r\n\r\n", 1),
]


def parser(max_body: int = 8) -> RequestParser:
    return RequestParser(max_head_bytes=4096, max_line_bytes=1024, max_headers=16,
                         max_body_bytes=max_body, capture=frozenset({"host"}))


def feed_split(data: bytes, cuts: list[int]) -> list:
    p, out, last = parser(), [], 0
    for cut in [*sorted(cuts), len(data)]:
        out += p.feed(data[last:cut])
        last = cut
    assert p.idle
    return out


@pytest.mark.parametrize("data,count", [s[1:] for s in STREAMS], ids=[s[0] for s in STREAMS])
def test_any_split_gives_the_same_requests(data, count):
    whole = feed_split(data, [])
    assert len(whole) == count
    assert feed_split(data, list(range(1, len(data)))) == whole  # one byte at a time
    rng = random.Random(7)
    for _ in range(30):
        assert feed_split(data, rng.sample(range(1, len(data)), 3)) == whole


@pytest.mark.parametrize("kind", [str, bytes])
def test_fields_of_a_parsed_request(kind):
    """An ASCII head is parsed as str; any other byte makes every field the exact bytes."""
    extra = b"X-Bin: \xff\r\n" if kind is bytes else b""
    (req,) = parser().feed(b"PUT /p?q HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n  b\r\n" + extra +
                           b"Content-Length: 10\r\n\r\n0123456789")
    t = (lambda v: v.encode()) if kind is bytes else (lambda v: v)
    assert (req.method, req.target, req.version) == (t("PUT"), t("/p?q"), "1.1")
    headers = [(t("Host"), t("h")), (t("X-Long"), t("a b"))]
    headers += [(b"X-Bin", b"\xff")] if kind is bytes else []
    assert req.headers == headers + [(t("Content-Length"), t("10"))]
    assert req.found == {"host": [t("h")], "content-length": [t("10")]}
    assert (req.body, req.body_size, req.body_truncated) == (b"01234567", 10, True)
    assert req.keep_alive


@pytest.mark.parametrize("head,keep", [
    (b"GET / HTTP/1.1\r\n\r\n", True), (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     False),
])
def test_keep_alive(head, keep):
    (req,) = parser().feed(head)
    assert req.keep_alive is keep


def test_slow_head_is_bounded():
    p = parser()
    with pytest.raises(HttpError) as err:
        for _ in range(5000):
            p.feed(b"X")
    assert err.value.status == 431


def test_mixed_line_endings_leave_no_cr_in_values():
    first, second = parser().feed(b"GET /mix HTTP/1.1\r\nHost: h\nX: y\r\n\n"
                                  b"GET /2 HTTP/1.1\nA: b\n\r\n")
    assert first.headers == [("Host", "h"), ("X", "y")]
    assert second.headers == [("A", "b")] and second.target == "/2"
