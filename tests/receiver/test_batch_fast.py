"""The msgspec fast path of /v1/batch: it takes exactly the plugin's canonical records, gives
for them the record the per-record Python path gives, and leaves everything else to that path
(so error messages and conversions stay where they are tested: test_batch_record.py)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import msgpack
import pytest

from node.config import build_config
from node.ids import UlidGenerator, ulid_time
from node.receiver.batch import Packed, Packers, unpack_batch
from node.receiver.batch_fast import FastRecords, record_spans
from node.receiver.batch_record import BatchRecordBuilder
from node.receiver.realip import RealIp

# What the Lua plugin writes (lua/oob/record.lua): every request field, v, response, meta.
PLUGIN = {"headers": [["host", "shop.example"], ["X-Forwarded-For", "198.51.100.4, 10.0.0.8"],
                      ["user-agent", "curl/8"]],
          "v": 1, "ts": 1700000000.25, "source": "lua", "request_id": "r-1", "method": "GET",
          "scheme": "https", "host": "shop.example", "port": 443, "path": "/p", "query": "a=1",
          "http_version": "2",
          "response": {"headers": [["content-type", "text/html"]], "status": 200,
                       "body": b"<html>", "body_size": 5120, "body_truncated": True},
          "body": b"{}", "body_size": 2, "body_truncated": False,
          "meta": {"cluster": "c", "remote_address": "198.51.100.4",
                   "direct_remote_address": "10.0.0.9", "route": "r", "duration_ms": 1.5}}

# (id, changes to PLUGIN (None: remove the key), taken by the fast path?)
CASES = [
    ("plugin record", {}, True),
    ("without v", {"v": None}, True),
    ("without response and meta", {"response": None, "meta": None}, True),
    ("with server_addr and server_port", {"server_addr": "10.1.1.1", "server_port": 8080},
     True),
    ("non-ascii utf-8 text", {"path": "/caf\u00e9", "headers": [["x-name", "J\u00fcrgen"]]},
     True),
    ("int ts", {"ts": 1700000000}, True),
    ("meta value at the limit", {"meta": {"k": "x" * 1024, "n": None, "b": False}}, True),
    ("bin text", {"path": b"/p"}, False),
    ("invalid utf-8 bin", {"query": b"a=\xff"}, False),
    ("bin header", {"headers": [[b"x-a", b"\x00"]]}, False),
    ("shadow host", {"host": "shop.example-SHADOW"}, False),
    ("body over the cap", {"body": b"x" * 40, "body_size": 40, "body_truncated": True},
     False),
    ("body_size below the body", {"body_size": 1}, False),
    ("truncated flag wrong", {"body_truncated": True}, False),
    ("response flag wrong", {"response": {"headers": [], "status": 200, "body": b"",
                                          "body_size": 9, "body_truncated": False}}, False),
    ("response defaults", {"response": {"status": 404}}, False),
    ("minimal record", {k: None for k in PLUGIN if k not in ("method", "path")}, False),
    ("nil field", {"query": None, "meta": None, "scheme": None}, False),
    ("unknown field", {"extra": 1}, False),
    ("node fields sent", {"id": "evil", "client_ip": "6.6.6.6"}, False),
    ("v is not 1", {"v": 2}, False),
    ("meta value over the limit", {"meta": {"k": "x" * 1025}}, False),
    ("meta bin value", {"meta": {"k": b"v"}}, False),
    ("too many headers", {"headers": [["a", "b"]] * 9}, False),
    ("bool port", {"port": True}, False),
    ("float body_size", {"body_size": 2.0}, False),
    ("mirror source", {"source": "mirror"}, False),
    ("empty method", {"method": ""}, False),
    ("negative ts", {"ts": -1.0}, False),
    ("infinite ts", {"ts": float("inf")}, False),
]


def record_of(changes: dict) -> dict:
    record = {k: v for k, v in (PLUGIN | changes).items() if v is not None}
    if changes.get("v", 1) is None:
        record.pop("v", None)
    return record


def fast_pack(fast_records: FastRecords, raw: bytes, ident: str = "ID" + "0" * 24,
              peer: str = "127.0.0.1") -> tuple[bytes, str] | None:
    """``pack_many`` of one record: (the packed record, its source) or None."""
    pieces, sources = fast_records.pack_many([raw], peer, [ident])
    return None if sources[0] is None else (b"".join(pieces), sources[0])


def builders() -> tuple[FastRecords, BatchRecordBuilder]:
    cfg = build_config(None, env={}, overrides={"receiver.max_body_bytes": 32,
                                                 "receiver.max_header_count": 8})
    realip = RealIp(["10.0.0.0/8"], "X-Forwarded-For", True)
    ids = (f"ID{i:024d}" for i in itertools.count())
    return FastRecords(cfg.receiver, realip), BatchRecordBuilder(cfg.receiver, realip,
                                                                 ids.__next__)


@pytest.mark.parametrize("changes,fast", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fast_path_takes_canonical_records_and_gives_the_same_record(changes, fast):
    fast_records, full = builders()
    raw = msgpack.packb(record_of(changes), use_bin_type=True)
    got = fast_pack(fast_records, raw)
    assert (got is not None) == fast
    if got is None:
        return
    item = msgpack.unpackb(raw, raw=False)
    want, source = full.pack(item, raw, "127.0.0.1")
    record = msgpack.unpackb(got[0], raw=False)
    assert record == msgpack.unpackb(want, raw=False) and got[1] == source
    assert len(record) == got[0][2]  # a map 16 whose header counts every key once


@pytest.mark.parametrize("extra", [1, 128], ids=["18 entries", "145 entries (0x91 = 0x80 | 17)"])
def test_duplicate_key_is_left_to_the_python_path(extra):
    fast_records, _ = builders()
    raw = msgpack.packb(PLUGIN, use_bin_type=True)
    # More entries in the header, then "path" again and again: 17 distinct keys.
    twice = b"\xde" + (len(PLUGIN) + extra).to_bytes(2, "big") + raw[3:] + \
        (msgpack.packb("path") + msgpack.packb("/other")) * extra
    assert msgpack.unpackb(twice, raw=False)["path"] == "/other"
    assert fast_pack(fast_records, twice) is None
    assert fast_pack(fast_records, raw) is not None


def test_ip_answers_are_cached_per_peer_and_header_values():
    fast_records, _ = builders()
    for forwarded, direct, client, chain in [
            ("198.51.100.4, 10.0.0.8", "10.0.0.9", "198.51.100.4",
             ["198.51.100.4", "10.0.0.8", "10.0.0.9"]),
            ("203.0.113.5", "10.0.0.9", "203.0.113.5", ["203.0.113.5", "10.0.0.9"]),
            ("203.0.113.5", "192.0.2.1", "192.0.2.1", ["203.0.113.5", "192.0.2.1"]),
            ("198.51.100.4, 10.0.0.8", "10.0.0.9", "198.51.100.4",
             ["198.51.100.4", "10.0.0.8", "10.0.0.9"])]:
        raw = msgpack.packb(PLUGIN | {"headers": [["x-forwarded-for", forwarded]],
                                      "meta": {"direct_remote_address": direct}})
        record = msgpack.unpackb(fast_pack(fast_records, raw)[0])
        assert (record["client_ip"], record["ip_chain"]) == (client, chain)
        assert record["peer_ip"] == chain[-1]
    assert len(fast_records._ips) == 3


# Scenarios of tests/lua/scenarios.lua: "basic" sends a header with a zero byte (msgpack bin,
# so the Python path); the others are what the plugin sends for ordinary requests.
LUA_SCENARIOS = [("basic", False), ("no_body_no_port", True), ("caps", True),
                 ("no_response_body", True), ("upgrade", True), ("size_bound", True),
                 ("sweep", True)]


@pytest.mark.parametrize("scenario,fast", LUA_SCENARIOS, ids=[s[0] for s in LUA_SCENARIOS])
def test_records_of_the_real_lua_plugin_take_the_fast_path(scenario, fast):
    luajit = shutil.which("luajit")
    if luajit is None:
        pytest.skip("luajit not installed (scripts/test.sh installs Debian's luajit)")
    script = Path(__file__).parents[1] / "lua" / "scenarios.lua"
    out = subprocess.run([luajit, str(script), scenario], capture_output=True, timeout=30,
                         check=True).stdout
    calls = msgpack.unpackb(bytes.fromhex(out.decode()), raw=False,
                            strict_map_key=False)["calls"]
    cfg = build_config(None, env={}, overrides={})
    realip = RealIp(["127.0.0.0/8"], "X-Forwarded-For", True)
    fast_records = FastRecords(cfg.receiver, realip)
    full = BatchRecordBuilder(cfg.receiver, realip, lambda: "ID" + "0" * 24)
    spans = [span for call in calls for span in record_spans(call["body"], 1000)]
    assert spans
    for span in spans:
        got = fast_pack(fast_records, span)
        assert (got is not None) == fast
        raw = bytes(span)
        want = full.pack(msgpack.unpackb(raw, raw=False), raw, "127.0.0.1")[0]
        if got is not None:
            assert msgpack.unpackb(got[0], raw=False) == msgpack.unpackb(want, raw=False)


def packers(per_run: int = 100) -> Packers:
    fast_records, full = builders()
    return Packers(fast_records, full, UlidGenerator(), 1024 * 1024, 1000, per_run)


def queued(packed: Packed, per_run: int = 100) -> list[dict]:
    """The records of ``packed``'s runs, checking each run against its count and sources."""
    records: list[dict] = []
    for run, count, sources in zip(packed.runs, packed.counts, packed.sources, strict=True):
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(run)
        in_run = list(unpacker)
        assert len(in_run) == count <= per_run
        assert sources == dict(Counter(r["source"] for r in in_run))
        records += in_run
    return records


def test_batch_mixes_both_paths_and_rejects_only_bad_records():
    records = [PLUGIN, record_of({"path": b"/bin"}), {"method": "GET"}, "not a map",
               record_of({"host": "a-shadow"}), record_of({"port": 70000}),
               record_of({"query": "\udcff"})]
    body = msgpack.packb({"v": 1, "records": records}, use_bin_type=True,
                         unicode_errors="surrogateescape")
    spans = unpack_batch(body, 1024 * 1024, 100)
    assert spans == record_spans(body, 100)  # the common shape is split in C
    packed = packers().pack_slice(spans, "127.0.0.1")
    errors = packed.errors
    assert [e["index"] for e in errors] == [2, 3, 5]
    assert errors[0]["error"] == "path: required" and "port" in errors[2]["error"]
    records = queued(packed)
    assert [r["path"] for r in records] == ["/p", "/bin", "/p", "/p"]
    assert records[2]["host"] == "a" and records[3]["query"] == b"\xff"
    assert packed.sources == [{"lua": 4}] and len({r["id"] for r in records}) == 4


@pytest.mark.parametrize("body", [
    msgpack.packb({"v": 1, "records": [PLUGIN], "sent": 1}),  # a third key
    msgpack.packb({"records": [PLUGIN], "v": 1.0}),  # v as a float: still version 1
], ids=["extra key", "float version"])
def test_other_batch_shapes_take_the_general_unpacker(body):
    assert record_spans(body, 100) is None
    packed = packers().pack_slice(unpack_batch(body, 1024 * 1024, 100), "127.0.0.1")
    assert len(queued(packed)) == 1 and packed.errors == []


def test_ulid_many_continues_the_sequence():
    clock = itertools.chain([1700000000.0] * 3, itertools.repeat(1700000000.001))
    ids = UlidGenerator(clock=clock.__next__)
    batch = [ids.new(), *ids.many(500), ids.new(), *ids.many(3)]
    assert len(set(batch)) == len(batch) == 505 and batch == sorted(batch)
    assert all(len(i) == 26 for i in batch) and ids.many(0) == []
    assert ulid_time(batch[0]) == 1700000000.0 and ulid_time(batch[-1]) == 1700000000.001


@pytest.mark.parametrize("per_run", [100, 7, 1000])
async def test_big_batch_is_packed_in_slices_of_whole_runs_with_batch_indices(per_run):
    from node.receiver.batch import SLICE_RECORDS, _pack_slices

    packing = packers(min(per_run, SLICE_RECORDS))
    step = packing.slice_records
    assert step % packing.per_run == 0 and SLICE_RECORDS // 2 < step <= SLICE_RECORDS
    count = 2 * step + 44
    bad = [5, step + 2, count - 1]
    records = [{"path": "/"} if i in bad else record_of({"path": f"/{i}"})
               for i in range(count)]
    body = msgpack.packb({"v": 1, "records": records}, use_bin_type=True)
    packed = await _pack_slices(packing, unpack_batch(body, 1 << 20, 1000), "127.0.0.1")
    assert [e["index"] for e in packed.errors] == bad
    assert all(e["error"] == "method: required" for e in packed.errors)
    paths = [r["path"] for r in queued(packed, packing.per_run)]
    assert paths == [f"/{i}" for i in range(count) if i not in bad]


def test_a_run_whose_records_are_all_rejected_is_left_out():
    records = [record_of({"path": "/0"}), {"path": "/"}, {"path": "/"}, {"path": "/"},
               record_of({"path": "/4"})]
    body = msgpack.packb({"v": 1, "records": records}, use_bin_type=True)
    packed = packers(per_run=2).pack_slice(record_spans(body, 100), "127.0.0.1")
    assert [e["index"] for e in packed.errors] == [1, 2, 3]
    assert packed.counts == [1, 1]  # runs of spans 0-1 and 4; none for spans 2-3
    assert [r["path"] for r in queued(packed, 2)] == ["/0", "/4"]
