"""BatchRecordBuilder: the spliced fast path gives exactly the record a full repack gives."""

from __future__ import annotations

import itertools

import msgpack
import pytest

from node.config import build_config
from node.receiver.batch_record import BatchRecordBuilder, RecordError
from node.receiver.realip import RealIp

BASE = {"ts": 1700000000.25, "source": "lua", "request_id": "r-1", "method": "GET",
        "scheme": "https", "host": "shop.example", "port": 443, "path": "/p", "query": "a=1",
        "http_version": "1.1",
        "headers": [["host", "shop.example"], ["x-forwarded-for", "1.2.3.4"]],
        "body": b"{}", "body_size": 2, "body_truncated": False,
        "response": {"status": 200, "headers": [], "body": b"", "body_size": 0,
                     "body_truncated": False},
        "meta": {"cluster": "c", "duration_ms": 1.5, "direct_remote_address": "127.0.0.1:5"}}

# (id, changes to BASE, expected changes in the record)
VARIANTS = [
    ("canonical: spliced", {}, {}),
    ("minimal record gets defaults", {"only": ["method", "path"]},
     {"ts": None, "source": "lua", "request_id": "", "scheme": "http", "host": "", "port": 0,
      "query": "", "http_version": "1.1", "headers": [], "body": b"", "body_size": 0,
      "body_truncated": False, "client_ip": "9.9.9.9", "ip_chain": ["9.9.9.9"],
      "peer_ip": "9.9.9.9"}),
    ("node fields from outside dropped", {"id": "evil", "client_ip": "6.6.6.6", "v": 9,
                                          "unknown": 1}, {}),
    ("bin text becomes str", {"path": b"/p", "headers": [[b"host", b"shop.example"],
                                                         ["x-forwarded-for", "1.2.3.4"]]}, {}),
    ("invalid utf-8 bin stays bytes", {"query": b"a=\xff"}, {"query": b"a=\xff"}),
    ("shadow host stripped", {"host": "shop.example-shadow"}, {}),
    ("body over the cap", {"body": b"x" * 40, "body_size": 40},
     {"body": b"x" * 32, "body_size": 40, "body_truncated": True}),
    ("nil means absent", {"query": None, "meta": None},
     {"query": "", "client_ip": "9.9.9.9", "ip_chain": ["1.2.3.4", "9.9.9.9"],
      "peer_ip": "9.9.9.9"}),
    ("response defaults", {"response": {"status": 404}},
     {"response": {"status": 404, "headers": [], "body": b"", "body_size": 0,
                   "body_truncated": False}}),
]


def builder() -> BatchRecordBuilder:
    cfg = build_config(None, env={}, overrides={"receiver.max_body_bytes": 32})
    ids = (f"ID{i:024d}" for i in itertools.count())
    return BatchRecordBuilder(cfg.receiver, RealIp(["127.0.0.0/8"], "X-Forwarded-For", False),
                              ids.__next__)


@pytest.mark.parametrize("changes,expected", [v[1:] for v in VARIANTS],
                         ids=[v[0] for v in VARIANTS])
def test_pack_equals_the_expected_record(changes, expected):
    changes = dict(changes)
    item = dict(BASE) if "only" not in changes else {k: BASE[k] for k in changes.pop("only")}
    item.update(changes)
    raw = msgpack.packb(item, use_bin_type=True)
    decoded = msgpack.unpackb(raw, raw=False)
    packed, source = builder().pack(decoded, raw, "9.9.9.9")
    record = msgpack.unpackb(packed, raw=False)
    want = dict(BASE) | {
        "v": 1, "id": "ID" + "0" * 24, "client_ip": "1.2.3.4", "peer_ip": "127.0.0.1",
        "ip_chain": ["1.2.3.4", "127.0.0.1"]} | expected
    if expected.get("ts", 0) is None:  # minimal record: ts is "now", no meta or response
        assert isinstance(record.pop("ts"), float)
        for key in ("ts", "meta", "response"):
            want.pop(key)
    if changes.get("meta", 0) is None:
        want.pop("meta")
    assert record == want and source == "lua"


@pytest.mark.parametrize("item,message", [
    ({"path": "/"}, "method: required"), ({"method": "GET"}, "path: required"),
    ({"method": "", "path": "/"}, "method: must not be empty"),
    ({"method": 5, "path": "/"}, "method: expected a string"),
    ({"method": "GET", "path": "/", "port": -1}, "port"),
    ({"method": "GET", "path": "/", "ts": float("nan")}, "ts"),
    ({"method": "GET", "path": "/", "source": "mirror"}, "source"),
    ({"method": "GET", "path": "/", "headers": [["a", "b", "c"]]}, "headers"),
    ({"method": "GET", "path": "/", "headers": [["a", 1]]}, "headers"),
    ({"method": "GET", "path": "/", "meta": {"k": [1]}}, "meta.k"),
    ({"method": "GET", "path": "/", "response": []}, "response"),
    ({"method": "GET", "path": "/", "response": {"status": 1000}}, "response.status"),
    ({"method": "GET", "path": "/", "body_truncated": "yes"}, "body_truncated"),
    ("not a map", "record: expected a map"),
])
def test_invalid_records_name_the_field(item, message):
    with pytest.raises(RecordError, match=message.replace(".", r"\.")):
        builder().pack(item, msgpack.packb(item), "9.9.9.9")


def test_duplicate_keys_are_packed_again_not_spliced():
    # {"method": "GET", "path": "/a", "path": "/b"}: three entries in the header, two keys.
    raw = b"\x83\xa6method\xa3GET\xa4path\xa2/a\xa4path\xa2/b"
    item = msgpack.unpackb(raw, raw=False)
    packed, _ = builder().pack(item, raw, "9.9.9.9")
    record = msgpack.unpackb(packed, raw=False)  # a well-formed map, no trailing data
    assert record["path"] == "/b" and record["method"] == "GET" and record["v"] == 1
