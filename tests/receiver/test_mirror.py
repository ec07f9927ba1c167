"""Mirror listener: raw requests in, v1 records out of the real stream (real Redis)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import time

import pytest

JSON_BODY = json.dumps({"user": {"name": "x' OR '1'='1"}, "tags": ["a", "b"]}).encode()
FORM_BODY = b"q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&page=2"
MULTIPART_BODY = (
    b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../a.php\"\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n<?php system($_GET['c']); ?>\x00\xff\r\n"
    b"--XyZ--\r\n")
CAP = 1024


def request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
            body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    lines = [method + b" " + target + b" " + version]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


def headers_of(record: dict) -> list[tuple]:
    return [tuple(h) for h in record["headers"]]


# (id, raw request, expected fields (a subset of the record))
CASES = [
    ("GET with query", request(b"GET", b"/search?q=shoes&page=2&q=%27", [
        (b"Host", b"shop.example-shadow:8080"), (b"X-Forwarded-For", b"203.0.113.7"),
        (b"x-request-id", b"9f0c6b1e-4f1a"), (b"Cookie", b"a=1"), (b"Cookie", b"b=2"),
        (b"X-Server-Addr", b"10.1.2.3"), (b"X-Server-Port", b"8443"),
        (b"X-Forwarded-Proto", b"https")]),
     {"method": "GET", "path": "/search", "query": "q=shoes&page=2&q=%27",
      "host": "shop.example", "port": 8080, "client_ip": "203.0.113.7",
      "ip_chain": ["203.0.113.7", "127.0.0.1"], "request_id": "9f0c6b1e-4f1a",
      "server_addr": "10.1.2.3", "server_port": 8443, "scheme": "https", "body": b"",
      "body_size": 0, "body_truncated": False, "http_version": "1.1",
      "headers": [["Host", "shop.example-shadow:8080"], ["X-Forwarded-For", "203.0.113.7"],
                  ["x-request-id", "9f0c6b1e-4f1a"], ["Cookie", "a=1"], ["Cookie", "b=2"],
                  ["X-Server-Addr", "10.1.2.3"], ["X-Server-Port", "8443"],
                  ["X-Forwarded-Proto", "https"]]}),
    ("POST JSON", request(b"POST", b"/api/users", [
        (b"Host", b"api.example-shadow"), (b"Content-Type", b"application/json")], JSON_BODY),
     {"method": "POST", "path": "/api/users", "query": "", "host": "api.example", "port": 0,
      "body": JSON_BODY, "body_size": len(JSON_BODY), "body_truncated": False,
      "client_ip": "127.0.0.1", "ip_chain": ["127.0.0.1"], "request_id": "",
      "scheme": "http"}),
    ("POST form", request(b"POST", b"/login?next=/", [
        (b"Host", b"shop.example"),
        (b"Content-Type", b"application/x-www-form-urlencoded")], FORM_BODY),
     {"path": "/login", "query": "next=/", "body": FORM_BODY, "body_size": len(FORM_BODY)}),
    ("POST multipart", request(b"POST", b"/upload", [
        (b"Host", b"shop.example"),
        (b"Content-Type", b"multipart/form-data; boundary=XyZ")], MULTIPART_BODY),
     {"body": MULTIPART_BODY, "body_size": len(MULTIPART_BODY), "body_truncated": False}),
    ("body above the cap", request(b"PUT", b"/big", [(b"Host", b"h")], b"A" * CAP + b"B" * 5000),
     {"method": "PUT", "body": b"A" * CAP, "body_size": CAP + 5000, "body_truncated": True}),
    ("chunked body above the cap with trailers", request(b"POST", b"/c", [
        (b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]) + chunked(b"z" * 3000, 700),
     {"body": b"z" * CAP, "body_size": 3000, "body_truncated": True}),
    ("non-UTF-8 bytes in path, query and headers", request(b"GET", b"/caf\xe9/\xff\xfe?q=\xc3(", [
        (b"Host", b"h\xe9st"), (b"X-Bin", b"\xff\x01\x7f"), (b"User-Agent", b"ok")]),
     {"path": b"/caf\xe9/\xff\xfe", "query": b"q=\xc3(", "host": b"h\xe9st",
      "headers": [["Host", b"h\xe9st"], ["X-Bin", b"\xff\x01\x7f"], ["User-Agent", "ok"]]}),
    ("fake gzip body kept raw", request(b"POST", b"/g", [
        (b"Host", b"h"), (b"Content-Encoding", b"gzip")], b"not gzip at all"),
     {"body": b"not gzip at all", "body_size": 15}),
    ("real gzip body not decoded", request(b"POST", b"/g", [
        (b"Host", b"h"), (b"Content-Encoding", b"gzip")], gzip.compress(b"x" * 100)),
     {"body": gzip.compress(b"x" * 100)}),
    ("absolute-form target", request(b"GET", b"http://origin.example-shadow:81/p?x=1", []),
     {"host": "origin.example", "port": 81, "path": "/p", "query": "x=1"}),
    ("HTTP/1.0", request(b"GET", b"/old", [(b"Host", b"h")], version=b"HTTP/1.0"),
     {"http_version": "1.0", "path": "/old"}),
    ("ipv6 host with port", request(b"GET", b"/", [(b"Host", b"[2001:db8::5]:8443")]),
     {"host": "[2001:db8::5]", "port": 8443}),
    ("untrusted X-Forwarded-Proto ignored", request(b"GET", b"/", [
        (b"Host", b"h"), (b"X-Forwarded-Proto", b"ftp")]), {"scheme": "http"}),
]


@pytest.mark.parametrize("raw,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_record_fields(start_receiver, exchange, raw, expected):
    rcv = await start_receiver(receiver__max_body_bytes=CAP)
    before = time.time()
    assert await exchange(rcv.mirror_port, raw) == [b"HTTP/1.1 200 OK"]
    (record,) = await rcv.wait_records(1)
    for field, value in expected.items():
        assert record[field] == value, field
    assert record["v"] == 1 and record["source"] == "mirror"
    assert len(record["id"]) == 26 and before <= record["ts"] <= time.time()
    assert record["peer_ip"] == "127.0.0.1"
    assert rcv.metric("oob_requests_received_total", source="mirror") == 1
    assert rcv.metric("oob_bodies_truncated_total") == int(record["body_truncated"])


@pytest.mark.parametrize("method", [b"GET", b"PROPFIND", b"CUST", b"get", b"M-SEARCH",
                                   b"FOO_BAR", b"BREW", b"PURGE", b"MKCALENDAR", b"X\xffY"])
async def test_any_method_token(start_receiver, exchange, method):
    rcv = await start_receiver()
    raw = request(method, b"/x", [(b"Host", b"h")], b"body")
    assert await exchange(rcv.mirror_port, raw) == [b"HTTP/1.1 200 OK"]
    (record,) = await rcv.wait_records(1)
    assert record["method"] == (method.decode() if method.isascii() else method)
    assert record["body"] == b"body"


async def test_keep_alive_pipelining_and_expect_continue(start_receiver, exchange):
    rcv = await start_receiver()
    first = request(b"POST", b"/1", [(b"Host", b"h"), (b"Expect", b"100-continue")], b"one")
    second = request(b"GET", b"/2", [(b"Host", b"h")])
    third = request(b"DELETE", b"/3", [(b"Host", b"h"), (b"Connection", b"close")])
    reader, writer = await asyncio.open_connection("127.0.0.1", rcv.mirror_port)
    writer.write(first + second + third)
    answers = await asyncio.wait_for(reader.read(), 5)  # the server closes after the third
    writer.close()
    # Bodies arrived with their heads: no "100 Continue", just three answers in order.
    assert answers == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2 + \
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    records = await rcv.wait_records(3)
    assert [r["path"] for r in records] == ["/1", "/2", "/3"]
    assert len({r["id"] for r in records}) == 3 and sorted(r["id"] for r in records) == [
        r["id"] for r in records]


async def test_expect_continue_before_the_body(start_receiver):
    rcv = await start_receiver()
    reader, writer = await asyncio.open_connection("127.0.0.1", rcv.mirror_port)
    writer.write(b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 4\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == \
        b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()
    (record,) = await rcv.wait_records(1)
    assert record["body"] == b"data"


# (id, raw request, status, rejected reason)
REJECTS = [
    ("header flood", request(b"GET", b"/", [(b"X-H", b"v")] * 200), 431, "header_flood"),
    ("header too long", request(b"GET", b"/", [(b"X-Long", b"v" * 20000)]), 431,
     "header_too_long"),
    ("request line too long", request(b"GET", b"/" + b"a" * 20000, []), 414, "header_too_long"),
    ("head too large", request(b"GET", b"/", [(b"X-%d" % i, b"v" * 1000) for i in range(100)]),
     431, "header_flood"),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
    ("conflicting content-length", request(b"POST", b"/", [
        (b"Content-Length", b"5"), (b"Content-Length", b"6")]) + b"hello", 400, "bad_request"),
    ("negative content-length", request(b"POST", b"/", [(b"Content-Length", b"-1")]), 400,
     "bad_request"),
    ("unknown transfer-encoding", request(b"POST", b"/", [(b"Transfer-Encoding", b"gzip")]),
     400, "bad_request"),
    ("bad chunk size", request(b"POST", b"/", [(b"Transfer-Encoding", b"chunked")]) +
     b"zz\r\nabc\r\n0\r\n\r\n", 400, "bad_request"),
    ("header without colon", request(b"GET", b"/", [(b"NoColon", b"")]).replace(b"NoColon: ",
                                                                              b"NoColon"),
     400, "bad_request"),
]


@pytest.mark.parametrize("raw,status,reason", [c[1:] for c in REJECTS],
                         ids=[c[0] for c in REJECTS])
async def test_rejects_are_clear_and_counted(start_receiver, exchange, raw, status, reason):
    rcv = await start_receiver()
    (line,) = await exchange(rcv.mirror_port, raw)
    assert line.startswith(b"HTTP/1.1 %d " % status)
    assert rcv.metric("oob_requests_rejected_total", reason=reason) == 1
    assert await rcv.records() == []
    # The listener is still fine afterwards.
    assert await exchange(rcv.mirror_port, request(b"GET", b"/ok", [])) == [
        b"HTTP/1.1 200 OK"]


async def test_garbage_never_crashes_the_listener(start_receiver, exchange):
    rcv = await start_receiver()
    rng = random.Random(1234)
    for _ in range(150):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        junk += rng.choice([b"", b"\r\n\r\n", b"\n\n"])
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.mirror_port)
        writer.write(junk)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 5)  # answered or closed, never hung
        writer.close()
    assert await exchange(rcv.mirror_port, request(b"GET", b"/after", [])) == [
        b"HTTP/1.1 200 OK"]


async def test_mirror_port_is_not_a_control_channel(start_receiver, exchange, batch_token):
    """A valid batch or a metrics scrape sent to the mirror port is just a mirrored request."""
    import msgpack

    rcv = await start_receiver()
    batch = msgpack.packb({"v": 1, "records": [{"method": "GET", "path": "/injected"}]})
    raws = [request(b"POST", b"/v1/batch", [(b"Authorization", b"Bearer " + batch_token.encode()),
                                            (b"Content-Type", b"application/msgpack")], batch),
            request(b"GET", b"/metrics", []), request(b"GET", b"/readyz", [])]
    for raw in raws:
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.mirror_port)
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"  # nothing else, ever
        writer.close()
    records = await rcv.wait_records(3)
    assert [r["path"] for r in records] == ["/v1/batch", "/metrics", "/readyz"]
    assert all(r["source"] == "mirror" for r in records) and records[0]["body"] == batch


async def test_connection_cap_sheds(start_receiver, exchange):
    rcv = await start_receiver(receiver__max_inflight=2)
    conns = [await asyncio.open_connection("127.0.0.1", rcv.mirror_port) for _ in range(2)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", rcv.mirror_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
    assert rcv.metric("oob_requests_shed_total", reason="inflight") == 1
    for _, w in conns + [(reader, writer)]:
        w.close()


async def test_big_body_drained_while_redis_is_down(start_receiver, exchange, own_redis_server):
    """Envoy applies a slow mirror's back-pressure to production: a 10 MB body must be read
    at once even with Redis stopped, and the record arrives once Redis is back."""
    rcv = await start_receiver(redis__url=own_redis_server.url)
    own_redis_server.kill()
    body = os.urandom(10 * 1024 * 1024)
    raw = request(b"POST", b"/upload", [(b"Host", b"h")], body)
    started = time.perf_counter()
    statuses = await exchange(rcv.mirror_port, raw, timeout=20)
    elapsed = time.perf_counter() - started
    print(f"10 MB body with Redis down: read and answered in {elapsed:.3f} s")
    assert statuses == [b"HTTP/1.1 200 OK"]
    own_redis_server.start()
    (record,) = await rcv.wait_records(1)
    assert record["body_size"] == len(body) and record["body_truncated"]
    assert record["body"] == body[:65536]
