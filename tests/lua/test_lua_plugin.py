"""The Envoy Lua plugin (lua/oob_mirror.lua and lua/oob/*) against a fake Envoy handle.

Each test runs one scenario of tests/lua/scenarios.lua under LuaJIT and checks what the
plugin sent with httpCall (decoded from msgpack), its counters and its logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from luarun import run_lua, unpack

from node.records import RequestRecord

Result = dict[str, Any]


def batches(out: Result) -> list[dict[str, Any]]:
    return [unpack(call["body"]) for call in out["calls"]]


def records(out: Result) -> list[dict[str, Any]]:
    return [rec for body in batches(out) for rec in body["records"]]


def paths(out: Result) -> list[str]:
    return [rec["path"] for rec in records(out)]


def test_record_fields_and_batch_post(scenario) -> None:
    out = scenario("basic")
    (call,) = out["calls"]
    assert call["cluster"] == "oob_node" and call["async"] is True and call["timeout"] == 5000
    h = call["headers"]
    assert (h[":method"], h[":path"], h[":authority"]) == ("POST", "/v1/batch", "oob-node")
    assert h["authorization"] == "Bearer secret"
    assert h["content-type"] == "application/msgpack"
    body = unpack(call["body"])
    assert set(body) == {"v", "records"} and body["v"] == 1
    (rec,) = body["records"]
    allowed = set(RequestRecord.__annotations__) - {"id", "client_ip", "peer_ip", "ip_chain"}
    assert set(rec) <= allowed, set(rec) - allowed
    assert rec["v"] == 1 and rec["source"] == "lua" and isinstance(rec["ts"], float)
    assert (rec["method"], rec["scheme"], rec["host"], rec["port"]) == (
        "POST", "http", "shop.example", 8080)
    assert (rec["path"], rec["query"], rec["http_version"]) == (
        "/api/items", "id=1%27&x=2", "1.1")
    assert rec["request_id"] == "rid-1"
    assert rec["headers"] == [["host", "shop.example:8080"], ["user-agent", "curl/8"],
                              ["a", "1"], ["a", "2"], ["x-request-id", "rid-1"],
                              ["x-bin", b"\xff\x00"], ["content-length", "11"]]
    assert (rec["body"], rec["body_size"], rec["body_truncated"]) == (b"hello world", 11, False)
    assert rec["response"] == {"status": 201, "body": b"created", "body_size": 7,
                               "body_truncated": False,
                               "headers": [["content-type", "text/plain"], ["set-cookie", "s=1"]]}
    meta = rec["meta"]
    assert meta["remote_address"] == "203.0.113.7" and meta["direct_remote_address"] == "127.0.0.1"
    assert meta["route"] == "demo" and meta["namespace"] == "shop"
    assert isinstance(meta["duration_ms"], float)
    assert out["stats"]["errors"] == 0 and out["logs"] == []


def test_ipv6_authority_http2_and_empty_bodies(scenario) -> None:
    (rec,) = records(scenario("no_body_no_port"))
    assert (rec["host"], rec["port"], rec["http_version"]) == ("2001:db8::1", 0, "2")
    assert rec["meta"]["remote_address"] == "2001:db8::7"
    assert rec["meta"]["direct_remote_address"] == "::1"
    assert (rec["body"], rec["body_size"], rec["body_truncated"]) == (b"", 0, False)
    assert rec["response"]["headers"] == []  # an empty array, not an empty map


@pytest.mark.parametrize(("name", "req", "resp"), [
    # (scenario, (body, size, truncated) of the request, and of the response)
    ("caps", (b"A" * 1000, 120000, True), (b"0123456789", 16, True)),
    ("no_response_body", (b"", 0, False), (b"", 15, True)),
    ("zero_caps", (b"", 3, True), (b"", 4, True)),
])
def test_bodies_over_the_cap_are_truncated_and_counted(scenario, name, req, resp) -> None:
    (rec,) = records(scenario(name))
    assert (rec["body"], rec["body_size"], rec["body_truncated"]) == req
    r = rec["response"]
    assert (r["body"], r["body_size"], r["body_truncated"]) == resp


def test_upgraded_stream_is_sent_at_once(scenario) -> None:
    out = scenario("upgrade")
    assert out["result"]["resp"] == "dead"  # did not wait for frames
    (rec,) = records(out)
    assert rec["response"]["status"] == 101 and rec["response"]["body_size"] == 0
    assert rec["response"]["body_truncated"] is False


def test_size_bound_sends_full_batches_only(scenario) -> None:
    out = scenario("size_bound")
    assert out["result"] == [0, 0, 1, 1, 1, 2, 2]
    assert [len(b["records"]) for b in batches(out)] == [3, 3]
    assert paths(out) == ["/r1", "/r2", "/r3", "/r4", "/r5", "/r6"]


def test_age_bound_sends_from_the_next_callback(scenario) -> None:
    out = scenario("age_bound")
    assert out["result"] == [0, 0, 1]
    assert paths(out) == ["/first"]


def test_bytes_bound(scenario) -> None:
    out = scenario("bytes_bound")
    # each record is ~3.2 KB: from the second one on, the buffer is over 5000 bytes and
    # sends what fits in 5000 bytes (one record), keeping the newest
    assert out["result"] == [0, 1, 2, 3]
    assert paths(out) == ["/b1", "/b2", "/b3"]
    assert all(len(call["body"]) < 5000 for call in out["calls"])


def test_drop_oldest_with_count(scenario) -> None:
    out = scenario("drop_oldest")
    assert out["result"]["before"] == 0
    assert paths(out) == ["/d3", "/d4", "/d5"]
    assert out["stats"]["dropped"] == 2
    assert out["calls"][0]["headers"]["x-oob-plugin-dropped"] == "2"


def test_drop_oldest_by_bytes(scenario) -> None:
    out = scenario("drop_by_bytes")  # ~30 KB records, 64 KiB buffer: two fit
    assert out["result"]["before"] == 0
    assert paths(out) == ["/y3", "/y4"]
    assert out["stats"]["dropped"] == 2


def test_abandoned_state_is_swept_and_still_sent(scenario) -> None:
    out = scenario("sweep")
    assert out["result"] == {"pending_before": 1, "pending_mid": 1, "pending_after": 0}
    assert out["stats"]["swept"] == 1
    assert paths(out) == ["/young", "/abandoned", "/later"]
    abandoned = records(out)[1]
    assert "response" not in abandoned  # response never seen: status unknown


def test_pending_state_is_bounded(scenario) -> None:
    out = scenario("pending_bound")
    assert out["result"]["pending"] == 2
    assert out["stats"]["skipped"] == 1


def test_sweeps_are_rate_limited(scenario) -> None:
    out = scenario("sweep_interval")
    assert out["result"]["swept_early"] == 0
    assert out["stats"]["swept"] == 2


@pytest.mark.parametrize(("rate", "n", "low", "high"), [
    ("0", 200, 0, 0),
    ("1", 200, 200, 200),
    # binomial(2000, 0.5): mean 1000, sd ~22; these bounds are > 9 sd away
    ("0.5", 2000, 800, 1200),
    ("0.05", 2000, 30, 180),
])
def test_sampling(scenario, rate: str, n: int, low: int, high: int) -> None:
    out = scenario("sample", rate, str(n))
    captured = out["result"]["captured"]
    assert low <= captured <= high
    assert out["stats"]["sampled_out"] == n - captured


@pytest.mark.parametrize("method", ["headers", "streamInfo", "bodyChunks", "httpCall",
                                    "logDebug"])
def test_errors_never_propagate(scenario, method: str) -> None:
    out = scenario("raising", method)
    assert out["result"]["ok_request"] is True and out["result"]["ok_response"] is True
    stats = out["stats"]
    if method == "logDebug":
        assert stats["errors"] == 0  # not called when nothing fails
    elif method == "httpCall":
        assert stats["send_errors"] >= 1
    else:
        assert stats["errors"] >= 1
        assert any(level == "debug" and f"boom {method}" in msg
                   for level, msg in out["logs"])
    if method != "httpCall":
        assert "/after" in paths(out)  # the plugin keeps working


def test_failed_http_call_is_counted(scenario) -> None:
    out = scenario("http_call_fails")
    assert out["result"]["ok"] is True
    assert out["stats"]["send_errors"] == 1 and out["calls"] == []


def test_unexpected_data_skips_that_request_only(scenario) -> None:
    out = scenario("unencodable")  # a header value that is not a string
    assert paths(out) == ["/good1", "/good2"]
    assert out["stats"]["errors"] == 1
    assert out["calls"][0]["headers"]["x-oob-plugin-errors"] == "1"
    assert any(level == "debug" and "error" in msg for level, msg in out["logs"])


def test_invalid_config_disables_the_plugin(scenario) -> None:
    out = scenario("bad_config")
    cases = out["result"]["cases"]
    expected = ["unknown_key", "batch_size", "batch_size", "sample_rate", "sample_rate",
                "cluster", "path", "token", "static_meta", "max_request_body_bytes",
                "timeout_ms"]
    for case, option in zip(cases, expected, strict=True):
        assert case["ok"] is False and case["err"].startswith(option + ":"), case
    assert out["result"]["ok_default"] is True
    assert out["result"]["passthrough"] is True and out["calls"] == []
    # logged once per worker, not per request
    assert out["logs"] == [["err", "oob-node plugin disabled: batch_size: must be >= 1, got 0"]]


def test_config_describes_every_option(scenario) -> None:
    rows = scenario("describe")["result"]
    names = [row[0] for row in rows]
    assert names == sorted(names)
    for name in ("cluster", "token", "authority", "path", "max_request_body_bytes",
                 "max_response_body_bytes", "batch_size", "batch_age_ms",
                 "max_buffered_records", "sample_rate", "timeout_ms"):
        assert name in names
    assert all(row[3] for row in rows)  # every option has a description


def test_response_before_request_body_end(scenario) -> None:
    out = scenario("interleaved")
    assert out["result"] == {"req": "dead", "resp": "dead"}
    (rec,) = records(out)
    assert rec["body"] == b"part1" and rec["body_truncated"] is True
    assert out["stats"]["errors"] == 0


def test_random_ids_differ_per_worker(scenario) -> None:
    runs = [scenario("ids")["result"] for _ in range(3)]
    prefixes = {r["prefix"] for r in runs}
    assert len(prefixes) == 3
    assert len({r["r"] for r in runs}) == 3
    for r in runs:
        assert r["token"].startswith(r["prefix"]) and len(r["token"]) > len(r["prefix"])


def test_record_helpers() -> None:
    cases = [
        ('R.split_path("/a/b?x=1&y")', ["/a/b", "x=1&y"]),
        ('R.split_path("/a?")', ["/a", ""]),
        ('R.split_path("/a")', ["/a", ""]),
        ('R.split_path("/a?b?c")', ["/a", "b?c"]),
        ('R.split_authority("shop.example:8080")', ["shop.example", 8080]),
        ('R.split_authority("shop.example")', ["shop.example", 0]),
        ('R.split_authority("[::1]:443")', ["::1", 443]),
        ('R.split_authority("[::1]")', ["::1", 0]),
        ('R.split_authority("")', ["", 0]),
        ('R.split_authority("a:b")', ["a:b", 0]),
        ('R.strip_port("1.2.3.4:5678")', ["1.2.3.4"]),
        ('R.strip_port("[2001:db8::1]:443")', ["2001:db8::1"]),
        ('R.strip_port("2001:db8::1")', ["2001:db8::1"]),
        ('R.strip_port("1.2.3.4")', ["1.2.3.4"]),
        ('R.http_version("HTTP/1.0")', ["1.0"]),
        ('R.http_version("HTTP/3")', ["3"]),
    ]
    stdin = "\n".join(f"{{{expr}}}" for expr, _ in cases) + "\n"
    lines = run_lua("encode.lua", stdin=stdin.replace("R.", "require('oob.record')."))
    for (expr, expected), line in zip(cases, lines, strict=True):
        assert unpack(bytes.fromhex(line)) == expected, expr


def test_every_option_is_in_the_readme_table(scenario) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name, kind, _default, description in scenario("describe")["result"]:
        assert f"| `{name}` | {kind} |" in readme, name
        assert description in readme, name


# (case, fake stream options as a Lua table, bodyChunks() calls (request, response),
#  request (body, body_size, body_truncated), response (status, body, size, truncated))
BODY_CASES = [
    ("get", '{ method = "GET", response_body = { "ok" } }',
     (1, 1), (b"", 0, False), (200, b"ok", 2, False)),
    ("post-content-length", '{ method = "POST", body = { "hel", "lo" } }',
     (1, 1), (b"hello", 5, False), (200, b"", 0, False)),
    ("post-content-length-0",
     '{ method = "POST", headers = { { "content-length", "0" } }, body = {} }',
     (0, 1), (b"", 0, False), (200, b"", 0, False)),
    # Envoy takes Transfer-Encoding out of a chunked HTTP/1 request's header map
    ("post-chunked", '{ method = "POST", unframed = true, body = { "ab", "cd" } }',
     (1, 1), (b"abcd", 4, False), (200, b"", 0, False)),
    ("http2-post-without-length",
     '{ method = "POST", protocol = "HTTP/2", unframed = true, body = { "xy" } }',
     (1, 1), (b"xy", 2, False), (200, b"", 0, False)),
    ("head", '{ method = "HEAD", response_headers = { { "content-length", "100" } } }',
     (1, 0), (b"", 0, False), (200, b"", 0, False)),
    ("204", '{ status = 204, response_body = { "x" } }',
     (1, 0), (b"", 0, False), (204, b"", 0, False)),
    ("304", '{ status = 304, response_headers = { { "content-length", "9" } } }',
     (1, 0), (b"", 0, False), (304, b"", 0, False)),
    ("response-content-length-0", '{ response_headers = { { "content-length", "0" } } }',
     (1, 0), (b"", 0, False), (200, b"", 0, False)),
    ("response-body-not-captured",
     '{ config = { capture_response_body = false }, response_body = { "secret" },'
     ' response_headers = { { "content-length", "6" } } }',
     (1, 0), (b"", 0, False), (200, b"", 6, True)),
]


@pytest.mark.parametrize(("spec", "reads", "req", "resp"), [c[1:] for c in BODY_CASES],
                         ids=[c[0] for c in BODY_CASES])
def test_bodies_are_read_only_when_there_can_be_one(scenario, spec, reads, req, resp) -> None:
    """A body chunk costs Envoy a coroutine yield and resume: bodyChunks() is not called
    when no body can follow (request Content-Length 0; HEAD, 204, 304, response
    Content-Length 0), and the record is complete either way."""
    out = scenario("body_reads", spec)
    assert (out["result"]["request"], out["result"]["response"]) == reads
    (rec,) = records(out)
    assert (rec["body"], rec["body_size"], rec["body_truncated"]) == req
    r = rec["response"]
    assert (r["status"], r["body"], r["body_size"], r["body_truncated"]) == resp
    assert out["stats"]["errors"] == 0


@pytest.mark.parametrize(("envoy", "tokens"), [
    # requestHeaders() available: only the request without x-request-id needs a token
    ("new", [False, True, False]),
    # older Envoy: every request carries a token in dynamicMetadata
    ("old", [True, True, True]),
])
def test_request_and_response_are_linked(scenario, envoy: str, tokens: list[bool]) -> None:
    out = scenario("linking", envoy)
    assert [bool(t) for t in out["result"]["tokens"]] == tokens
    assert out["result"]["pending"] == 0
    got = {rec["path"]: rec["response"]["status"] for rec in records(out)}
    assert got == {"/with-id": 201, "/without-id": 202, "/with-id-2": 203}


@pytest.mark.parametrize("order", ["123", "321", "213", "132"])
def test_requests_sharing_a_request_id_keep_their_own_response(scenario, order: str) -> None:
    out = scenario("shared_request_id", order)
    got = {rec["path"]: rec["response"]["status"] for rec in records(out)}
    assert got == {"/dup1": 201, "/dup2": 202, "/dup3": 203}
    assert out["result"] == {"pending": 0, "tokens": 0, "dups": False}


def test_reused_record_tables_keep_only_their_own_data(scenario) -> None:
    out = scenario("reuse")
    recs = {rec["path"]: rec for rec in records(out)}
    assert list(recs) == ["/many", "/few", "/many2", "/none", "/next", "/next2", "/next3",
                          "/next4"]
    many = [[f"x-h{i}", "v" * i] for i in range(1, 121)]
    host = ["host", "shop.example:8080"]
    assert recs["/many"]["headers"] == [host, *many, ["content-length", "8"]]
    assert recs["/many"]["body"] == b"big body"
    assert recs["/many"]["response"]["headers"] == many
    assert recs["/many"]["response"]["body"] == b"big"
    assert recs["/few"]["headers"] == [host, ["a", "1"]]
    assert recs["/many2"]["headers"] == [host, *many]
    for path, extra in (("/none", []), ("/next", [["b", "2"]]), ("/next2", []),
                        ("/next3", []), ("/next4", [])):
        rec = recs[path]
        assert rec["headers"] == [host, *extra], path
        assert (rec["body"], rec["body_size"]) == (b"", 0)
        assert rec["response"] == {"status": 200, "headers": [], "body": b"", "body_size": 0,
                                   "body_truncated": False}


def test_texts_are_str_when_utf8_else_exact_bytes(scenario) -> None:
    (rec,) = records(scenario("texts"))
    assert (rec["path"], rec["query"]) == (b"/caf\xc3\xa9/\xff", b"q=\xc3\xa9&r=\x80")
    assert (rec["host"], rec["port"]) == ("hé.example", 80)
    assert rec["request_id"] == b"rid\xff"
    assert rec["headers"] == [["host", "hé.example:80"], ["x-utf8", "café"],
                              ["x-latin1", b"caf\xe9"], ["x-request-id", b"rid\xff"]]
    assert rec["response"]["headers"] == [["x-utf8", "€"], ["x-bin", b"a\x00b"]]


def test_a_late_request_body_stays_with_its_record(scenario) -> None:
    out = scenario("reused_while_streaming")
    first, second = records(out)
    assert first["path"] == "/upload"
    # its response came first: nothing read yet, so truncated (size seen so far: 0)
    assert (first["body"], first["body_size"], first["body_truncated"]) == (b"", 0, True)
    assert second["path"] == "/next"
    assert (second["body"], second["body_size"], second["body_truncated"]) == (b"", 0, False)
    assert out["stats"]["errors"] == 0
