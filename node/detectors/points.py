"""Point extraction: every place of a request record that can carry attacker input.

First stage of detection: ``engine.py`` calls ``extract`` on a RequestRecord and scans the
returned points' values (through ``decode.py``). A point is ``(mask, path, value)``: ``mask``
holds the bits of the rule point kinds it answers to (``pack.KIND_BIT``: a user-input header
is both ``headers`` and ``all_headers``), ``path`` is what a hit reports (``("query", "id")``,
``("json", "user", "name")``, ``("body", "multipart", "file", "filename")``...).

Values are once URL-decoded where the application would decode them (query, form, cookie
names); the decoding pipeline does the rest. Bodies are inflated when ``Content-Encoding``
says gzip/deflate/br (``inflate.py``, bounded), then parsed by content type, sniffed when
the header lies (a JSON-looking body is parsed as JSON). # SECURITY: every parser is bounded:
``max_points`` in total, ``max_json_depth`` nesting, values cut at ``max_value_bytes``; XML
is tokenized with regexes and entities are never resolved (no network, no expansion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from node.detectors.decode import bytes_to_text, url_decode
from node.detectors.inflate import inflate
from node.detectors.pack import KIND_BIT
from node.records import RequestRecord, Text

PATH = KIND_BIT["path"]
ARGS = KIND_BIT["args"]
ARG_NAMES = KIND_BIT["arg_names"]
BODY = KIND_BIT["body"]
COOKIES = KIND_BIT["cookies"]
HEADERS = KIND_BIT["headers"] | KIND_BIT["all_headers"]
ALL_HEADERS = KIND_BIT["all_headers"]
FILENAMES = KIND_BIT["filenames"]
METHOD = KIND_BIT["method"]
# Every mask a point can carry (``extract`` uses no other; a test holds it to that). The scan
# databases are built from it: a group only holds patterns that can apply to a point it scans.
POINT_MASKS = frozenset({METHOD, PATH, ARGS, ARG_NAMES, ARGS | ARG_NAMES, BODY, BODY | ARGS,
                         COOKIES, COOKIES | ARG_NAMES, HEADERS, ALL_HEADERS, FILENAMES})

# Headers whose values are fixed vocabulary or set by proxies and tracing, not typed by a
# client: only ``all_headers`` rules see them. Every other header (user-agent, referer,
# content-type, authorization, custom ones...) carries user input: ``headers`` as well.
FIXED_HEADERS = frozenset({
    "accept", "accept-encoding", "accept-language", "connection", "content-length", "host",
    "te", "upgrade-insecure-requests", "cache-control", "pragma", "dnt", "priority",
    "keep-alive", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since",
    "x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
    "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-ot-span-context",
    "x-forwarded-proto", "x-forwarded-port", "x-forwarded-client-cert", "x-amzn-trace-id",
    "x-cloud-trace-context", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms",
    "x-envoy-attempt-count", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id",
    "x-envoy-decorator-operation", "x-envoy-original-path", "sec-fetch-site",
    "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user", "sec-ch-ua", "sec-ch-ua-mobile",
    "sec-ch-ua-platform", "grpc-timeout", "content-encoding",
})
SKIP_HEADERS = frozenset({"cookie", ":path", ":authority", ":method", ":scheme"})
# Header name -> point mask (0: not a header point); any other name is HEADERS.
_HEADER_MASK = {**dict.fromkeys(SKIP_HEADERS, 0), **dict.fromkeys(FIXED_HEADERS, ALL_HEADERS)}
MAX_PARTS = 64  # multipart parts followed
_PLAIN_SEGMENT = re.compile(r"[\w.~@:,=-]*")
_PLAIN_NAME = re.compile(r"[\w.-]*")
_FORM_NAME = re.compile(r"[\w.\[\]$:@-]*")  # parameter names as frameworks write them


class Point(NamedTuple):
    mask: int
    path: tuple[str, ...]
    value: str


@dataclass(frozen=True)
class Limits:
    max_points: int = 512
    max_json_depth: int = 32
    max_value_bytes: int = 16384


_new_tuple = tuple.__new__


class _Out:
    """The growing point list, refusing points beyond the cap."""

    __slots__ = ("points", "cap", "limits")

    def __init__(self, limits: Limits) -> None:
        self.points: list[Point] = []
        self.cap = limits.max_points
        self.limits = limits

    def add(self, mask: int, path: tuple[str, ...], value: str) -> bool:
        points = self.points
        if len(points) >= self.cap:
            return False
        if value:
            # tuple.__new__ directly: Point(...) costs an extra Python frame per point.
            points.append(_new_tuple(Point, (mask, path, value)))
        return True

    @property
    def full(self) -> bool:
        return len(self.points) >= self.cap


def text(value: Text | Any) -> str:
    """A wire text field as str; invalid UTF-8 kept as surrogate escapes for scanning."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes_to_text(bytes(value))
    return "" if value is None else str(value)


def extract(record: RequestRecord, limits: Limits) -> list[Point]:
    """Every point of ``record``, most telling first (they survive the ``max_points`` cap)."""
    out = _Out(limits)
    out.add(METHOD, ("method",), text(record.get("method", "")))
    _path(out, text(record.get("path", "")))
    _urlencoded(out, text(record.get("query", "")), ("query",))
    # str is the common case (valid UTF-8): no call for it.
    headers = [(n.lower() if n.__class__ is str else text(n).lower(),
                v if v.__class__ is str else text(v)) for n, v in record.get("headers") or ()]
    by_mask: dict[int, list[tuple[str, str]]] = {HEADERS: [], ALL_HEADERS: [], 0: []}
    for header in headers:
        by_mask[_HEADER_MASK.get(header[0], HEADERS)].append(header)
    for name, value in by_mask[0]:
        if name == "cookie":
            _cookies(out, value)
    add = out.add
    for name, value in by_mask[HEADERS]:
        add(HEADERS, ("header", name), value)
    body = record.get("body") or b""
    if body:
        # Not lowercased here: the multipart boundary is case-sensitive.
        ctype = next((v for n, v in headers if n == "content-type"), "")
        coding = next((v.lower() for n, v in headers if n == "content-encoding"), "")
        _body(out, inflate(bytes(body), coding, limits.max_value_bytes * 4), ctype)
    for name, value in by_mask[ALL_HEADERS]:
        add(ALL_HEADERS, ("header", name), value)
    return out.points


def _path(out: _Out, path: str) -> None:
    out.add(PATH, ("path",), path)
    if _PLAIN_SEGMENT.fullmatch(path.replace("/", "")):
        return
    # Segments with odd characters also stand alone, for patterns anchored at a segment.
    for i, seg in enumerate(path.split("/")[1:17], start=1):
        if seg and not _PLAIN_SEGMENT.fullmatch(seg):
            out.add(PATH, ("path", str(i)), seg)


def _urlencoded(out: _Out, raw: str, prefix: tuple[str, ...]) -> None:
    if not raw:
        return
    for part in raw.split("&"):
        if out.full:
            return
        name, eq, value = part.partition("=")
        name = _unquote(name)
        if not eq:
            # "?<script>": no name; the token itself is the value a parameter would carry.
            out.add(ARGS | ARG_NAMES, (*prefix, name[:64]), name)
            continue
        out.add(ARG_NAMES, (*prefix, name[:64], "#name"), name)
        out.add(ARGS, (*prefix, name[:64]), _unquote(value))
        if not _FORM_NAME.fullmatch(name):
            # A "name" that is no name ("'admin', '1'" of "'admin', '1'='1'") means the
            # payload itself held the "=": the whole token is scanned too.
            out.add(ARGS, (*prefix, name[:64], "#token"), _unquote(part))


def _unquote(value: str) -> str:
    if "%" in value or "+" in value:
        return url_decode(value)
    return value


def _cookies(out: _Out, header: str) -> None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name or value:
            out.add(COOKIES, ("cookie", name[:64]), value)
        # A payload in the cookie name ("<script>=1", "java.lang.Runtime=x") is scanned like
        # a value too; odd-looking names also answer to arg_names rules (plain ones do not:
        # "PHPSESSID" is a normal cookie name but an odd query parameter name).
        mask = COOKIES if _PLAIN_NAME.fullmatch(name) else COOKIES | ARG_NAMES
        out.add(mask, ("cookie", name[:64], "#name"), name)


# ----------------------------------------------------------------------------- bodies

def _body(out: _Out, body: bytes, ctype: str) -> None:
    body = body[: out.limits.max_value_bytes * 4]
    head = body[:64].lstrip()
    raw_ctype, ctype = ctype, ctype.lower()
    if "multipart/" in ctype and _multipart(out, body, raw_ctype):
        return
    if ("json" in ctype or head[:1] in (b"{", b"[")) and _json(out, body):
        doc = body[: out.limits.max_value_bytes]
        if b'"$' in doc:
            # Query operators ("$gt") only show with their context ({"password": {"$gt":
            # ""}}), which single keys and values lose: such a document is also a body
            # point (only then: scanning every JSON document twice costs a quarter of
            # the scanned bytes).
            out.add(BODY, ("body", "json"), bytes_to_text(doc))
        return
    if "xml" in ctype or head[:1] == b"<":
        _xml(out, bytes_to_text(body))
        return
    if "x-www-form-urlencoded" in ctype or _looks_form(body):
        _urlencoded(out, bytes_to_text(body), ("body", "form"))
        return
    out.add(BODY | ARGS, ("body",), bytes_to_text(body[: out.limits.max_value_bytes]))


_FORM = re.compile(rb"[^\s=&]{1,128}=[^\s&]*(?:&[^\s=&]{1,128}=[^\s&]*)*")


def _looks_form(body: bytes) -> bool:
    return len(body) < 65536 and _FORM.fullmatch(body.strip()) is not None


def _json(out: _Out, body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # includes nesting deeper than orjson's own limit
    stack: list[tuple[tuple[str, ...], Any]] = [(("json",), doc)]
    depth_cap = out.limits.max_json_depth + 1
    while stack and not out.full:
        path, node = stack.pop()
        if isinstance(node, str):
            out.add(ARGS, path, node)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            continue
        elif len(path) > depth_cap:
            continue
        elif isinstance(node, dict):
            _json_object(out, path, node, stack)
        elif isinstance(node, list):
            stack.extend(((*path, str(i)), v) for i, v in reversed(list(enumerate(node[:1024]))))
    return True


def _json_object(out: _Out, path: tuple[str, ...], node: dict[str, Any],
                 stack: list[tuple[tuple[str, ...], Any]]) -> None:
    items = list(node.items())[:1024]
    for key, _ in items:
        out.add(ARG_NAMES, (*path, key[:64], "#name"), key)
    stack.extend(((*path, key[:64]), value) for key, value in reversed(items))


_XML_TAG = re.compile(r"<([A-Za-z_][\w:.-]{0,63})((?:[^>\"']|\"[^\"]*\"|'[^']*')*)/?>")
_XML_ATTR = re.compile(r"([\w:.-]{1,64})\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_TEXT = re.compile(r">([^<]+)<|<!\[CDATA\[(.*?)\]\]>", re.S)


def _xml(out: _Out, doc: str) -> None:
    # SECURITY: a tokenizer, not a parser: entities and DTDs are reported, never resolved.
    doc = doc[: out.limits.max_value_bytes]
    out.add(BODY, ("body", "xml"), doc)
    for m in _XML_TAG.finditer(doc):
        if out.full:
            return
        for a in _XML_ATTR.finditer(m.group(2)):
            out.add(ARGS, ("body", "xml", m.group(1), "@" + a.group(1)), a.group(2) or a.group(3))
    for m in _XML_TEXT.finditer(doc):
        value = (m.group(1) or m.group(2) or "").strip()
        if value and not out.add(ARGS, ("body", "xml", _tag_before(doc, m.start())), value):
            return


def _tag_before(doc: str, pos: int) -> str:
    start = doc.rfind("<", max(0, pos - 256), pos)
    m = _XML_TAG.match(doc, start) if start >= 0 else None
    return m.group(1) if m else "#text"


_BOUNDARY = re.compile(r"boundary=(?:\"([^\"]{1,200})\"|([^;,\s]{1,200}))")
_DISPOSITION = re.compile(rb"""\b(name|filename)\*?=(?:"((?:[^"\\]|\\.)*)"|([^;\r\n]*))""",
                          re.I)


def _multipart(out: _Out, body: bytes, ctype: str) -> bool:
    m = _BOUNDARY.search(ctype)
    if m:
        boundary = (m.group(1) or m.group(2)).encode("latin-1", "replace")
    elif body.startswith(b"--"):
        boundary = body[2: body.find(b"\r\n") if b"\r\n" in body else 72].strip()
    else:
        return False
    parts = body.split(b"--" + boundary)[1:MAX_PARTS + 1]
    for part in parts:
        if part.startswith(b"--") or out.full:
            break
        _part(out, part)
    return bool(parts)


def _part(out: _Out, part: bytes) -> None:
    head, sep, content = part.partition(b"\r\n\r\n")
    if not sep:
        head, sep, content = part.partition(b"\n\n")
    fields = {k.lower(): (q if q is not None else u).strip()
              for k, q, u in (m.groups() for m in _DISPOSITION.finditer(head))}
    name = bytes_to_text(fields.get(b"name", b""))[:64]
    if name:
        out.add(ARG_NAMES, ("body", "multipart", name, "#name"), name)
    _part_headers(out, name, head)
    if b"filename" in fields:
        out.add(FILENAMES, ("body", "multipart", name, "filename"),
                bytes_to_text(fields[b"filename"]))
    if content.endswith(b"\r\n"):
        content = content[:-2]
    out.add(ARGS, ("body", "multipart", name),
            bytes_to_text(content[: out.limits.max_value_bytes]))


_PART_HEADER = re.compile(rb"^([\w-]{1,64})[ \t]*:[ \t]*(.*?)\r?$", re.M)


def _part_headers(out: _Out, name: str, head: bytes) -> None:
    """A part's own headers but Content-Disposition (already split into name/filename):
    its Content-Type (``charset=utf-7`` to slip past filters) or any header a client
    invented carries input like a request header."""
    for m in _PART_HEADER.finditer(head[:4096]):
        hname = m.group(1).decode("ascii").lower()
        if hname != "content-disposition":
            out.add(HEADERS, ("body", "multipart", name, "#header", hname),
                    bytes_to_text(m.group(2)))
