"""Batch listener: POST /v1/batch with the real app, writer and Redis; health endpoints."""

from __future__ import annotations

import asyncio

import aiohttp
import msgpack
import pytest

from node.queue.keys import ENTRY_FIELD


def lua_record(i: int = 0, **extra: object) -> dict:
    record = {"ts": 1700000000.5 + i, "source": "lua", "request_id": f"req-{i}",
              "method": "POST", "scheme": "https", "host": "shop.example", "port": 443,
              "path": f"/p/{i}", "query": "a=1", "http_version": "1.1",
              "headers": [["host", "shop.example"], ["x-forwarded-for", "203.0.113.9"]],
              "body": b"{}", "body_size": 2, "body_truncated": False,
              "response": {"status": 200, "headers": [["content-type", "text/html"]],
                           "body": b"<html>", "body_size": 6, "body_truncated": False},
              "meta": {"cluster": "shop", "route": "r1", "duration_ms": 3.5}}
    record.update(extra)
    return record


def pack(records: list, **batch: object) -> bytes:
    return msgpack.packb({"v": 1, "records": records, **batch}, use_bin_type=True)


async def post(port: int, body: bytes, token: str | None, **kw) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/msgpack", **kw.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/v1/batch", data=body, headers=headers, **kw) as resp:
        text = await resp.text()
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, (await resp.json() if "json" in ctype else text)


async def test_batch_with_one_malformed_record(start_receiver, batch_token):
    rcv = await start_receiver()
    records = [lua_record(0), {"method": "GET"}, lua_record(2), "not a map",
               lua_record(4, port=70000), lua_record(5, headers=[["only-name"]])]
    status, answer = await post(rcv.batch_port, pack(records), batch_token)
    assert status == 202
    assert answer["accepted"] == 2 and answer["rejected"] == 4
    assert [e["index"] for e in answer["errors"]] == [1, 3, 4, 5]
    assert answer["errors"][0]["error"] == "path: required"
    assert "port" in answer["errors"][2]["error"] and "headers" in answer["errors"][3]["error"]
    queued = await rcv.wait_records(2)
    assert [r["path"] for r in queued] == ["/p/0", "/p/2"]
    first = queued[0]
    assert first["ts"] == 1700000000.5 and first["source"] == "lua"
    assert len(first["id"]) == 26 and first["client_ip"] == "203.0.113.9"
    assert first["peer_ip"] == "127.0.0.1" and first["ip_chain"] == ["203.0.113.9", "127.0.0.1"]
    assert first["response"]["status"] == 200 and first["response"]["body"] == b"<html>"
    assert first["meta"] == {"cluster": "shop", "route": "r1", "duration_ms": 3.5}
    assert rcv.metric("oob_requests_received_total", source="lua") == 2
    assert rcv.metric("oob_requests_rejected_total", reason="bad_record") == 4


async def test_node_assigns_ids_and_resolves_ip_from_direct_peer(start_receiver, batch_token):
    rcv = await start_receiver(receiver__trusted_proxies="10.0.0.0/8",
                               receiver__real_ip_recursive=True)
    forged = lua_record(0, id="attacker-id", client_ip="1.1.1.1", peer_ip="2.2.2.2",
                        headers=[["X-Forwarded-For", "198.51.100.4, 10.0.0.8"]],
                        meta={"direct_remote_address": "10.0.0.9:51000"})
    direct_untrusted = lua_record(1, headers=[["x-forwarded-for", "198.51.100.4"]],
                                  meta={"direct_remote_address": "192.0.2.1:443"})
    status, _ = await post(rcv.batch_port, pack([forged, direct_untrusted]), batch_token)
    assert status == 202
    first, second = await rcv.wait_records(2)
    assert first["id"] != "attacker-id" and first["client_ip"] == "198.51.100.4"
    assert first["peer_ip"] == "10.0.0.9"
    assert first["ip_chain"] == ["198.51.100.4", "10.0.0.8", "10.0.0.9"]
    assert second["client_ip"] == "192.0.2.1"  # untrusted direct peer: header ignored


async def test_text_fields_keep_invalid_utf8_and_bodies_are_capped(start_receiver,
                                                                    batch_token):
    rcv = await start_receiver(receiver__max_body_bytes=8)
    # A Lua msgpack encoder sends every string as str, also when it is not UTF-8.
    raw_str = lua_record(0, path="/caf\udce9", host="shop.example-shadow",
                         headers=[["x-bin", "\udcff\udcfe"]], body="0123456789",
                         body_size=None, meta={"pod": "p\udcff", "k\udcfe": 1})
    packed = msgpack.packb({"v": 1, "records": [raw_str]}, use_bin_type=True,
                           unicode_errors="surrogateescape")
    status, answer = await post(rcv.batch_port, packed, batch_token)
    assert (status, answer["accepted"]) == (202, 1)
    (record,) = await rcv.wait_records(1)
    assert record["path"] == b"/caf\xe9" and record["headers"] == [["x-bin", b"\xff\xfe"]]
    assert record["host"] == "shop.example"
    assert record["meta"] == {"pod": "p\ufffd", "k\ufffd": 1}  # meta is always str
    assert record["body"] == b"01234567" and record["body_size"] == 10
    assert record["body_truncated"] is True


def _too_large_chunked() -> object:
    async def gen():
        for _ in range(40):
            yield b"\x00" * 65536
    return gen()


# (id, body, token ("ok" = the right one), extra request kwargs, status, rejected reason)
REFUSED = [
    ("missing token", pack([lua_record()]), None, {}, 401, "unauthorized"),
    ("wrong token", pack([lua_record()]), "wrong-token", {}, 401, "unauthorized"),
    ("basic auth instead of bearer", pack([lua_record()]), None,
     {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, 401, "unauthorized"),
    ("not msgpack", b"\xc1\xc1 definitely not msgpack", "ok", {}, 400, "bad_msgpack"),
    ("json instead of msgpack", b'{"v": 1, "records": []}', "ok", {}, 400, "bad_msgpack"),
    ("trailing garbage", pack([lua_record()]) + b"\x00", "ok", {}, 400, "bad_msgpack"),
    ("a list, not a map", msgpack.packb([lua_record()]), "ok", {}, 400, "bad_shape"),
    ("wrong version", pack([lua_record()], v=2), "ok", {}, 400, "bad_shape"),
    ("records not a list", msgpack.packb({"v": 1, "records": {"a": 1}}), "ok", {}, 400,
     "bad_shape"),
    ("too many records", pack([lua_record(i) for i in range(11)]), "ok", {}, 413,
     "too_many_records"),
    ("over max_batch_bytes (content-length)", pack([lua_record(body=b"x" * 2_000_000)]), "ok",
     {}, 413, "too_large"),
    ("over max_batch_bytes (chunked, no length)", None, "ok", {}, 413, "too_large"),
    ("non-string map keys", msgpack.packb({"v": 1, "records": [{7: 1}]}), "ok", {}, 400,
     "bad_msgpack"),
    ("top-level key missing", msgpack.packb({"v": 1, 7: []}), "ok", {}, 400, "bad_shape"),
    ("ext types", msgpack.packb({"v": 1, "records": [msgpack.ExtType(1, b"x")]}), "ok", {},
     400, "bad_msgpack"),
    ("array header claiming 2**32-1 items", b"\x82\xa1v\x01\xa7records\xdd\xff\xff\xff\xff",
     "ok", {}, 413, "too_many_records"),
    ("truncated document", pack([lua_record()])[:-5], "ok", {}, 400, "bad_msgpack"),
]


@pytest.mark.parametrize("body,token,kw,status,reason", [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
async def test_refused_batches_queue_nothing(start_receiver, batch_token, body, token, kw,
                                            status, reason):
    rcv = await start_receiver(receiver__max_batch_bytes=1024 * 1024,
                               receiver__max_batch_records=10)
    body = _too_large_chunked() if body is None else body
    got, _ = await post(rcv.batch_port, body, batch_token if token == "ok" else token, **kw)
    assert got == status
    assert rcv.metric("oob_requests_rejected_total", reason=reason) == 1
    await asyncio.sleep(0.05)
    assert await rcv.records() == []


async def test_no_token_configured_refuses_everything(start_receiver):
    rcv = await start_receiver(receiver__batch_token=None)
    for token in (None, "", "anything"):
        status, _ = await post(rcv.batch_port, pack([lua_record()]), token)
        assert status == 401
    assert await rcv.records() == []


async def test_503_when_shedding(start_receiver, batch_token, redis):
    rcv = await start_receiver(queue__high_water=3, queue__records_per_entry=1)
    status, _ = await post(rcv.batch_port, pack([lua_record(i) for i in range(5)]), batch_token)
    assert status == 202
    await rcv.wait_records(5)
    await rcv.ctx.writer.refresh_depth()  # 5 entries, no group yet: over high water
    status, _ = await post(rcv.batch_port, pack([lua_record(9)]), batch_token)
    assert status == 503
    assert rcv.metric("oob_requests_rejected_total", reason="overloaded") == 1
    assert len(await rcv.records()) == 5


async def test_health_ready_and_metrics(start_receiver, own_redis_server):
    rcv = await start_receiver(redis__url=own_redis_server.url)
    base = f"http://127.0.0.1:{rcv.batch_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with session.get(base + "/readyz") as resp:
            assert resp.status == 200
        async with session.get(base + "/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200
            for name in ("oob_requests_received_total", "oob_requests_rejected_total",
                         "oob_requests_shed_total", "oob_enqueue_latency_seconds",
                         "oob_queue_depth_records", "oob_redis_up"):
                assert name in text
        own_redis_server.kill()
        async with session.get(base + "/readyz") as resp:
            assert resp.status == 503
        async with session.get(base + "/healthz") as resp:
            assert resp.status == 200
        own_redis_server.start()
        async with session.get(base + "/readyz") as resp:
            assert resp.status == 200


async def test_concurrent_batches_are_bounded(start_receiver, batch_token):
    """max_inflight batches at once: a slow sender holding a slot makes the next one 503."""
    rcv = await start_receiver(receiver__max_inflight=1)
    body = pack([lua_record(0)])
    reader, writer = await asyncio.open_connection("127.0.0.1", rcv.batch_port)
    writer.write(b"POST /v1/batch HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer " +
                 batch_token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) +
                 body[:5])  # headers and the start of the body; the rest later
    await writer.drain()
    await asyncio.sleep(0.1)
    status, _ = await post(rcv.batch_port, pack([lua_record(1)]), batch_token)
    assert status == 503
    writer.write(body[5:])
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 202 ")
    writer.close()
    status, _ = await post(rcv.batch_port, pack([lua_record(2)]), batch_token)
    assert status == 202


async def test_batch_is_queued_in_entries_of_records_per_entry(start_receiver, batch_token):
    rcv = await start_receiver(queue__records_per_entry=3)
    records = [lua_record(i) for i in range(5)] + [{"method": "GET"}] + \
        [lua_record(i) for i in range(5, 10)]
    status, answer = await post(rcv.batch_port, pack(records), batch_token)
    assert status == 202 and (answer["accepted"], answer["rejected"]) == (10, 1)
    queued = await rcv.wait_records(10)
    assert [r["path"] for r in queued] == [f"/p/{i}" for i in range(10)]
    assert len({r["id"] for r in queued}) == 10
    entries = [msgpack.unpackb(f[ENTRY_FIELD]) for _, f in await rcv.check.xrange(rcv.stream)]
    assert [len(e) for e in entries] == [3, 2, 3, 2]  # runs of 3 records sent, one rejected
    assert rcv.metric("oob_requests_received_total", source="lua") == 10
