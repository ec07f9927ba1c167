"""Point extraction for every part of a request and every body kind, with its limits."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import brotli
import pytest
from detect_helpers import record

from node.corpus import read_cases, to_record
from node.detectors.pack import KIND_BIT
from node.detectors.points import POINT_MASKS, Limits, Point, extract
from node.records import RequestRecord


def points(rec: RequestRecord, **limits: Any) -> dict[tuple[str, ...], Point]:
    return {p.path: p for p in extract(rec, Limits(**limits))}


def kinds(point: Point) -> set[str]:
    return {k for k, bit in KIND_BIT.items() if point.mask & bit}


def test_request_line_and_query() -> None:
    got = points(record(method="POST", path="/a/b", query="id=1%27&q=a+b&flag"))
    assert got[("method",)].value == "POST" and kinds(got[("method",)]) == {"method"}
    assert got[("path",)].value == "/a/b" and kinds(got[("path",)]) == {"path"}
    assert got[("query", "id")].value == "1'"  # once decoded, as the application sees it
    assert got[("query", "q")].value == "a b"
    assert got[("query", "id", "#name")].value == "id"
    assert kinds(got[("query", "id", "#name")]) == {"arg_names"}
    assert kinds(got[("query", "flag")]) == {"args", "arg_names"}


def test_repeated_args_are_all_extracted() -> None:
    pts = extract(record(query="id=1&id=2%20or%201=1"), Limits())
    assert [p.value for p in pts if p.path == ("query", "id")] == ["1", "2 or 1=1"]


def test_path_segments_with_odd_characters() -> None:
    got = points(record(path="/files/..%2f..%2fetc/passwd"))
    assert got[("path", "2")].value == "..%2f..%2fetc"
    assert ("path", "1") not in got  # plain segments are not repeated


def test_headers_and_cookies() -> None:
    got = points(record(headers=[["User-Agent", "sqlmap/1.7"], ["Cookie", "sid=abc; t=x%27"],
                                 ["Accept", "text/html"], ["X-Api-Key", "k"],
                                 ["X-Request-Id", "rid"]]))
    assert kinds(got[("header", "user-agent")]) == {"headers", "all_headers"}
    assert kinds(got[("header", "accept")]) == {"all_headers"}
    assert kinds(got[("header", "x-api-key")]) == {"headers", "all_headers"}
    assert kinds(got[("header", "x-request-id")]) == {"all_headers"}
    assert got[("cookie", "t")].value == "x%27" and kinds(got[("cookie", "t")]) == {"cookies"}
    assert ("header", "cookie") not in got


JSON_BODY = json.dumps({"user": {"name": "O'Neil", "tags": ["a", "<b>"]}, "n": 3}).encode()
MULTIPART = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello' or 1=1\r\n"
             b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
             b"filename=\"../../shell.php\"\r\nContent-Type: image/png\r\n\r\n"
             b"<?php system($_GET['c']); ?>\r\n"
             b"--XyZ--\r\n")
XML_BODY = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<r a="1&quot;"><name>&x;</name><![CDATA[<script>]]></r>')

BODY_CASES = [
    ("json", "application/json", JSON_BODY,
     {("json", "user", "name"): "O'Neil", ("json", "user", "tags", "1"): "<b>",
      ("json", "user", "#name"): "user"}),
    ("json sniffed", "text/plain", JSON_BODY, {("json", "user", "name"): "O'Neil"}),
    ("form", "application/x-www-form-urlencoded", b"q=1%27+or+1%3D1&x=2",
     {("body", "form", "q"): "1' or 1=1", ("body", "form", "x"): "2"}),
    ("form sniffed", "", b"a=1&b=%3Cscript%3E", {("body", "form", "b"): "<script>"}),
    ("multipart", "multipart/form-data; boundary=XyZ", MULTIPART,
     {("body", "multipart", "title"): "hello' or 1=1",
      ("body", "multipart", "file", "filename"): "../../shell.php",
      ("body", "multipart", "file"): "<?php system($_GET['c']); ?>"}),
    ("xml", "application/xml", XML_BODY,
     {("body", "xml", "name"): "&x;", ("body", "xml", "r", "@a"): "1&quot;"}),
    ("raw text", "text/plain", b"just; some text", {("body",): "just; some text"}),
    # UTF-16/32 bodies (with or without a byte-order mark) are read as the parsers read them
    ("xml utf-16 bom", "application/xml", b"\xff\xfe" + "<r><n>&x;</n></r>".encode("utf-16-le"),
     {("body", "xml", "n"): "&x;"}),
    ("json utf-16be", "application/json", json.dumps({"q": "' or 1=1"}).encode("utf-16-be"),
     {("json", "q"): "' or 1=1"}),
    ("json utf-32le", "application/json", json.dumps({"q": "<b>"}).encode("utf-32-le"),
     {("json", "q"): "<b>"}),
    ("json utf-8 bom", "text/plain", b"\xef\xbb\xbf" + JSON_BODY,
     {("json", "user", "name"): "O'Neil"}),
]


@pytest.mark.parametrize("name,ctype,body,expected", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_body_kinds(name: str, ctype: str, body: bytes,
                    expected: dict[tuple[str, ...], str]) -> None:
    got = points(record(method="POST", body=body,
                        headers=[["Content-Type", ctype]] if ctype else []))
    for path, value in expected.items():
        assert got[path].value == value, path


def _every_kind_of_record() -> list[RequestRecord]:
    """Records reaching every branch of ``extract``: each body kind, cookies, headers, odd
    path segments, a bare query token, and the repo's labeled request files."""
    recs = [record(method="POST", path="/a/<b>/c", query="x=1&<script>&a[b]=2",
                   headers=[["Cookie", "s=1; <x>=2"], ["User-Agent", "u"], ["Accept", "*/*"],
                   ["Content-Type", ctype]], body=body)
            for _, ctype, body, _ in BODY_CASES]
    data = Path(__file__).parent.parent / "data"
    recs += [to_record(case) for f in sorted(data.glob("*.jsonl")) for case in read_cases(f)]
    return recs


def test_points_carry_only_the_masks_the_databases_were_built_for() -> None:
    # prefilter.group_kinds builds each scan group from POINT_MASKS: a point with another
    # mask could meet a group without the patterns that apply to it.
    seen = {p.mask for rec in _every_kind_of_record() for p in extract(rec, Limits())}
    assert seen <= POINT_MASKS, seen - POINT_MASKS
    assert seen == POINT_MASKS  # and the records do reach every kind: none is stale


def test_xml_doctype_is_a_body_point_and_never_resolved() -> None:
    got = points(record(method="POST", body=XML_BODY, headers=[["Content-Type", "text/xml"]]))
    doc = got[("body", "xml")]
    assert "body" in kinds(doc) and "<!ENTITY x SYSTEM" in doc.value
    assert "root:" not in "".join(p.value for p in got.values())
    assert any("<script>" in p.value for p in got.values())  # CDATA text


def test_raw_body_answers_args_and_body_rules() -> None:
    got = points(record(method="POST", body=b"plain text payload",
                        headers=[["Content-Type", "text/plain"]]))
    assert kinds(got[("body",)]) == {"args", "body"}


def test_invalid_utf8_survives_as_exact_bytes() -> None:
    got = points(record(path=b"/a\xff\xfe", query=b"q=%ff\xfe",
                        headers=[[b"User-Agent", b"x\xc3"]]))
    assert got[("path",)].value.encode("utf-8", "surrogateescape") == b"/a\xff\xfe"
    assert got[("header", "user-agent")].value.encode("utf-8", "surrogateescape") == b"x\xc3"


def test_max_points_caps_everything() -> None:
    query = "&".join(f"a{i}={i}" for i in range(10000))
    assert len(extract(record(query=query), Limits(max_points=50))) == 50


def test_method_and_path_come_first_under_the_cap() -> None:
    pts = extract(record(query="a=1&b=2&c=3"), Limits(max_points=2))
    assert [p.path for p in pts] == [("method",), ("path",)]


def test_json_depth_limit() -> None:
    doc: Any = "deep"
    for _ in range(100):
        doc = {"k": doc}
    got = points(record(method="POST", body=json.dumps(doc).encode(),
                        headers=[["Content-Type", "application/json"]]), max_json_depth=8)
    assert max(len(p) for p in got) <= 8 + 3
    assert all(p.value != "deep" for p in got.values())


HOSTILE_BODIES = [
    ("json 100k deep", b"[" * 100000 + b"]" * 100000, "application/json"),
    ("json 100k deep objects", b'{"a":' * 100000 + b"1" + b"}" * 100000, "application/json"),
    ("broken json", b'{"a": "' + b"x" * 100000, "application/json"),
    ("xml 100k tags", b"<a>" * 100000, "application/xml"),
    ("multipart 10k parts", b"--b\r\n\r\nx\r\n" * 10000, "multipart/form-data; boundary=b"),
    ("multipart no boundary", b"--\r\n" * 1000, "multipart/form-data"),
    ("invalid utf-8", bytes(range(256)) * 2000, "text/plain"),
    ("form 100k args", b"a=1&" * 100000, "application/x-www-form-urlencoded"),
]


@pytest.mark.parametrize("name,body,ctype", HOSTILE_BODIES, ids=[h[0] for h in HOSTILE_BODIES])
def test_hostile_bodies_are_bounded(name: str, body: bytes, ctype: str) -> None:
    limits = Limits(max_points=512, max_json_depth=32, max_value_bytes=16384)
    pts = extract(record(method="POST", body=body, headers=[["Content-Type", ctype]]), limits)
    assert len(pts) <= 512
    assert all(len(p.value) <= 4 * 16384 for p in pts)


def test_cookie_names_are_scanned() -> None:
    got = points(record(headers=[["Cookie", "<script>alert(1)</script>=v; "
                                            "java.lang.Runtime=1; PHPSESSID=x"]]))
    name = got[("cookie", "<script>alert(1)</script>", "#name")]
    assert name.value == "<script>alert(1)</script>" and kinds(name) == {"cookies", "arg_names"}
    # Plain names are cookie points only: "PHPSESSID" is a normal cookie name but would be
    # an odd query parameter name for arg_names rules.
    assert got[("cookie", "java.lang.Runtime", "#name")].value == "java.lang.Runtime"
    assert kinds(got[("cookie", "PHPSESSID", "#name")]) == {"cookies"}


def test_json_document_is_also_a_body_point() -> None:
    body = b'{"username": "admin", "password": {"$gt": ""}}'
    got = points(record(method="POST", body=body,
                        headers=[["Content-Type", "application/json"]]))
    assert got[("body", "json")].value == body.decode() and kinds(got[("body", "json")]) == {"body"}
    assert got[("json", "username")].value == "admin"
    plain = points(record(method="POST", body=b'{"username": "admin"}',
                          headers=[["Content-Type", "application/json"]]))
    assert ("body", "json") not in plain  # no operator key: values and keys suffice


def test_multipart_field_names_and_part_headers() -> None:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n"
            b"Content-Type: text/plain; charset=utf-7\r\nX-Custom: v\r\n\r\n+ADw-x\r\n--b--\r\n")
    got = points(record(method="POST", body=body,
                        headers=[["Content-Type", "multipart/form-data; boundary=b"]]))
    ctype = got[("body", "multipart", "note", "#header", "content-type")]
    assert ctype.value == "text/plain; charset=utf-7"
    assert kinds(ctype) == {"headers", "all_headers"}
    assert got[("body", "multipart", "note", "#header", "x-custom")].value == "v"
    assert ("body", "multipart", "note", "#header", "content-disposition") not in got
    assert kinds(got[("body", "multipart", "note", "#name")]) == {"arg_names"}
    assert got[("body", "multipart", "note")].value == "+ADw-x"


# A JPEG-like file: a header, then random bytes with a web shell in a comment segment.
NOISE = random.Random(7).randbytes(3000)
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + NOISE[:1500]
        + b"\xff\xfe\x00\x20<?php system($_GET['c']); ?>\x00" + NOISE[1500:])
LONG_TEXT = "Grüße, ".encode() * 60 + b"\x1b[0m end"


def test_binary_parts_are_scanned_as_their_printable_runs() -> None:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + JPEG + b"\r\n--b\r\n"
            b"Content-Disposition: form-data; name=\"t\"\r\n\r\nplain\x01text, kept\r\n--b\r\n"
            b"Content-Disposition: form-data; name=\"long\"\r\n\r\n" + LONG_TEXT + b"\r\n--b--\r\n")
    got = points(record(method="POST", body=body,
                        headers=[["Content-Type", "multipart/form-data; boundary=b"]]))
    content = got[("body", "multipart", "f")].value
    assert "<?php system($_GET['c']); ?>" in content
    assert "JFIF" not in content  # runs under STRINGS_MIN characters are noise
    assert "\udc80" not in content and "\x00" not in content  # no invalid or control byte
    assert len(content) < len(JPEG) // 10
    # a short part is kept as sent, control bytes and all
    assert got[("body", "multipart", "t")].value == "plain\x01text, kept"
    # a long text with a stray control byte is text too
    assert got[("body", "multipart", "long")].value == LONG_TEXT.decode()


def test_binary_raw_body_is_scanned_as_its_printable_runs() -> None:
    got = points(record(method="POST", body=JPEG,
                        headers=[["Content-Type", "application/octet-stream"]]))
    assert "<?php system($_GET['c']); ?>" in got[("body",)].value
    assert len(got[("body",)].value) < len(JPEG) // 10


@pytest.mark.parametrize("body,token", [
    (b"%27admin%27%2C+%271%27=%271%27", "'admin', '1'='1'"),  # "=" inside the payload
    (b"hash+=+%27abc%27", "hash = 'abc'"),
])
def test_form_token_with_an_odd_name_is_scanned_whole(body: bytes, token: str) -> None:
    pts = extract(record(method="POST", body=body, headers=[
        ["Content-Type", "application/x-www-form-urlencoded"]]), Limits())
    assert token in [p.value for p in pts if p.path[-1] == "#token"]


def test_form_token_with_a_plain_name_is_not_repeated() -> None:
    pts = extract(record(method="POST", body=b"user[name]=a&q=b%3Dc", headers=[
        ["Content-Type", "application/x-www-form-urlencoded"]]), Limits())
    assert not [p for p in pts if p.path[-1] == "#token"]


@pytest.mark.parametrize("query,joined", [
    ("q=%22&del%0Bq1&rem%0B", {("query", "q", "#joined"): '"&del\x0bq1&rem\x0b'}),
    ("a=1&flag&b=2&x&y", {("query", "a", "#joined"): "1&flag", ("query", "b", "#joined"): "2&x&y"}),
    ("flag&a=1&b=2", {}),  # a token before any value joins nothing
    ("a=1&b=2", {}),
])
def test_value_cut_by_an_unencoded_ampersand_is_also_scanned_joined(
        query: str, joined: dict[tuple[str, ...], str]) -> None:
    got = points(record(query=query))
    assert {path: p.value for path, p in got.items() if path[-1] == "#joined"} == joined


def test_unknown_headers_carry_user_input() -> None:
    got = points(record(headers=[["Remote-Ip", "' onselect=alert(1) '"],
                                 ["Content-Type", "%{(#_='multipart/form-data')}"]]))
    assert kinds(got[("header", "remote-ip")]) == {"headers", "all_headers"}
    assert kinds(got[("header", "content-type")]) == {"headers", "all_headers"}


def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data)


def _deflate_raw(data: bytes) -> bytes:
    import zlib
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("coding,encode", [("gzip", _gzip), ("deflate", _deflate_raw),
                                          ("br", brotli.compress),
                                          ("gzip, br", lambda d: brotli.compress(_gzip(d)))])
def test_compressed_bodies_are_inflated(coding: str, encode: Any) -> None:
    got = points(record(method="POST", body=encode(b"q=1%27%20or%201%3D1"),
                        headers=[["Content-Type", "application/x-www-form-urlencoded"],
                                 ["Content-Encoding", coding]]))
    assert got[("body", "form", "q")].value == "1' or 1=1"


def test_fake_gzip_is_kept_as_sent_and_bombs_are_capped() -> None:
    got = points(record(method="POST", body=b"a=<script>", headers=[
        ["Content-Encoding", "gzip"], ["Content-Type", "application/x-www-form-urlencoded"]]))
    assert got[("body", "form", "a")].value == "<script>"
    bomb = _gzip(b"A" * 50_000_000)  # 50 MB inflating from ~50 KB
    pts = extract(record(method="POST", body=bomb, headers=[["Content-Encoding", "gzip"]]),
                  Limits(max_value_bytes=16384))
    assert all(len(p.value) <= 16384 * 4 for p in pts)


# Empty values (never points) between non-empty ones, repeated and long names: what the
# cap bookkeeping and the per-name caches of ``extract`` must get right.
EDGE_RECORDS = [
    record(query="a=&b=1&=2&c&" + "n" * 100 + "=3&%41%42=4&b=5",
           headers=[["Cookie", "s=; =v; t=1;; " + "c" * 100 + "=2"], ["X-Empty", ""],
                    ["User-Agent", "u"], ["USER-AGENT", "u2"], ["X-" + "h" * 100, "v"],
                    ["Accept", ""], ["ACCEPT", "*/*"], ["Cookie", "z=9"]]),
    record(method="POST", body=b'{"": "", "a": ["", "x", {"": 1, "k": ""}], "b": "y"}',
           headers=[["Content-Type", "application/json"], ["Accept", "a"]]),
]


@pytest.mark.parametrize("rec", _every_kind_of_record() + EDGE_RECORDS)
def test_the_cap_keeps_exactly_the_first_points(rec: RequestRecord) -> None:
    every = extract(rec, Limits())
    assert all(p.value for p in every)
    for cap in range(1, len(every) + 2):
        assert extract(rec, Limits(max_points=cap)) == every[:cap], cap


def test_names_route_alike_whatever_their_case_or_length() -> None:
    pts = extract(EDGE_RECORDS[0], Limits())
    assert [p.value for p in pts if p.path == ("header", "user-agent")] == ["u", "u2"]
    assert [p.value for p in pts if p.path == ("header", "accept")] == ["*/*"]
    assert kinds(next(p for p in pts if p.path == ("header", "accept"))) == {"all_headers"}
    long_header = next(p for p in pts if p.path == ("header", "x-" + "h" * 100))
    assert long_header.value == "v" and kinds(long_header) == {"headers", "all_headers"}
    assert [p.value for p in pts if p.path == ("query", "b")] == ["1", "5"]
    assert [p.value for p in pts if p.path == ("query", "AB")] == ["4"]
    assert [p.path for p in pts if p.value == "3"] == [("query", "n" * 64)]
    assert [p.value for p in pts if p.path[0] == "cookie" and p.path[-1] != "#name"] == [
        "v", "1", "2", "9"]


def test_name_caches_are_bounded() -> None:
    from node.detectors import points as points_module

    for i in range(points_module.NAMES_CACHED + 100):
        extract(record(query=f"p{i}=1", headers=[[f"x-h{i}", "v"], ["Cookie", f"c{i}=1"]]),
                Limits())
    caches = (points_module._ROUTES, points_module._PARAMS, points_module._COOKIES)  # noqa: SLF001
    assert all(0 < len(cache) <= points_module.NAMES_CACHED for cache in caches)
