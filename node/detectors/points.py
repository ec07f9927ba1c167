"""Point extraction: every place of a request record that can carry attacker input.

First stage of detection: ``engine.py`` calls ``extract`` on a RequestRecord and scans the
returned points' values (through ``decode.py``). A ``Point`` has a ``mask``, a ``path`` and
a ``value``: ``mask`` holds the bits of the rule point kinds it answers to (``pack.KIND_BIT``:
a user-input header is both ``headers`` and ``all_headers``), ``path`` is what a hit reports
(``("query", "id")``, ``("json", "user", "name")``, ``("body", "multipart", "file",
"filename")``...).

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
from typing import Any, Final, TypeVar

import orjson

from node.detectors.decode import bytes_to_text, url_decode
from node.detectors.inflate import inflate
from node.detectors.pack import KIND_BIT
from node.records import RequestRecord, Text

PATH: Final = KIND_BIT["path"]
ARGS: Final = KIND_BIT["args"]
ARG_NAMES: Final = KIND_BIT["arg_names"]
BODY: Final = KIND_BIT["body"]
COOKIES: Final = KIND_BIT["cookies"]
HEADERS: Final = KIND_BIT["headers"] | KIND_BIT["all_headers"]
ALL_HEADERS: Final = KIND_BIT["all_headers"]
FILENAMES: Final = KIND_BIT["filenames"]
METHOD: Final = KIND_BIT["method"]
# Every mask a point can carry (``extract`` uses no other; a test holds it to that). The scan
# databases are built from it: a group only holds patterns that can apply to a point it scans.
POINT_MASKS: Final = frozenset({METHOD, PATH, ARGS, ARG_NAMES, ARGS | ARG_NAMES, BODY, BODY | ARGS,
                               COOKIES, COOKIES | ARG_NAMES, HEADERS, ALL_HEADERS, FILENAMES})

# Headers whose values are fixed vocabulary or set by proxies and tracing, not typed by a
# client: only ``all_headers`` rules see them. Every other header (user-agent, referer,
# content-type, authorization, custom ones...) carries user input: ``headers`` as well.
FIXED_HEADERS: Final = frozenset({
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
SKIP_HEADERS: Final = frozenset({"cookie", ":path", ":authority", ":method", ":scheme"})
# Header name -> point mask (0: not a header point); any other name is HEADERS.
_HEADER_MASK: Final = {**dict.fromkeys(SKIP_HEADERS, 0),
                       **dict.fromkeys(FIXED_HEADERS, ALL_HEADERS)}
MAX_PARTS: Final = 64  # multipart parts followed
_PLAIN_SEGMENT: Final = re.compile(r"[\w.~@:,=-]*")
_PLAIN_PATH: Final = re.compile(r"[\w.~@:,=/-]*")  # plain segments and their slashes
_PLAIN_NAME: Final = re.compile(r"[\w.-]*")
_FORM_NAME: Final = re.compile(r"[\w.\[\]$:@-]*")  # parameter names as frameworks write them


class Point:
    """One point: ``mask``, ``path``, ``value`` (see above). A plain class: compiled, making
    one fills a C struct (a NamedTuple cost a Python call per point, ~3% of analysis)."""

    def __init__(self, mask: int, path: tuple[str, ...], value: str) -> None:
        self.mask = mask
        self.path = path
        self.value = value

    def __repr__(self) -> str:
        return f"Point({self.mask}, {self.path!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Point) and self.mask == other.mask
                and self.path == other.path and self.value == other.value)

    def __hash__(self) -> int:
        return hash((self.mask, self.path, self.value))


@dataclass(frozen=True)
class Limits:
    max_points: int = 512
    max_json_depth: int = 32
    max_value_bytes: int = 16384


# Caches of the per-name work (lowercasing, routing, path tuples): header, cookie and
# parameter names repeat across requests. Plain dicts read inline by the loops (an
# lru_cache call per header cost more than the work it saved). # SECURITY: bounded (short
# names only, emptied when full): attacker-chosen names only churn them.
NAMES_CACHED: Final = 1024
NAME_CACHED_MAX: Final = 64  # longer names (payloads without "=") are not worth remembering
_Route = tuple[str, int, tuple[str, str]]  # (lowercased name, point mask, point path)
_Param = tuple[str, tuple[str, ...], tuple[str, ...], bool]
_Cookie = tuple[tuple[str, str], int, tuple[str, str, str]]
_ROUTES: Final[dict[str, _Route]] = {}
_PARAMS: Final[dict[tuple[tuple[str, ...], str], _Param]] = {}
_COOKIES: Final[dict[str, _Cookie]] = {}
_T = TypeVar("_T")


def _remember(cache: dict[Any, _T], key: Any, name: str, value: _T) -> _T:
    """``value``, kept under ``key`` when its ``name`` is short enough to repeat."""
    if len(name) <= NAME_CACHED_MAX:
        if len(cache) >= NAMES_CACHED:
            cache.clear()
        cache[key] = value
    return value


class _Out:
    """The growing point list. The hot sections (headers, cookies, query and form
    arguments, JSON) append their points directly and check the cap once per loop
    iteration, which bounds the work; ``extract`` then cuts the list at the cap. Points
    with an empty value are never appended, so the result is the first ``max_points``
    non-empty points, exactly as if every point had gone through ``add``. (One ``add``
    call per point plus the per-name work cost a quarter of extract's time, measured.)"""

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
            points.append(Point(mask, path, value))
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
    headers = _Headers(record.get("headers") or ())
    for value in headers.cookies:
        _cookies(out, value)
    points = out.points
    if len(points) < out.cap:
        points += headers.user
    body = record.get("body") or b""
    if body:
        coding = headers.coding.lower()
        _body(out, inflate(bytes(body), coding, limits.max_value_bytes * 4), headers.ctype)
    if len(points) < out.cap:
        points += headers.fixed
    del points[out.cap:]
    return points


class _Headers:
    """A request's headers sorted out in one pass: the points of those carrying user input
    and of those of fixed vocabulary (each in request order), the cookie headers' values,
    and the first Content-Type (as sent: the multipart boundary is case-sensitive) and
    Content-Encoding."""

    __slots__ = ("user", "fixed", "cookies", "ctype", "coding")

    def __init__(self, raw: Any) -> None:
        user: list[Point] = []  # locals, assigned at the end: the loop runs per header
        fixed: list[Point] = []
        cookies: list[str] = []
        ctype = coding = None
        for n, v in raw:
            # str is the common case (valid UTF-8): no call for it.
            if not isinstance(n, str):
                n = text(n)
            if not isinstance(v, str):
                v = text(v)
            # The name's work (lowercasing, routing, its path tuple) is cached per name.
            route = _ROUTES.get(n)
            lower, mask, path = route if route is not None else _header_route(n)
            if mask == HEADERS:
                if v:
                    user.append(Point(HEADERS, path, v))
                if lower == "content-type" and ctype is None:
                    ctype = v
            elif mask:
                if v:
                    fixed.append(Point(ALL_HEADERS, path, v))
                if lower == "content-encoding" and coding is None:
                    coding = v
            elif lower == "cookie":
                cookies.append(v)
        self.user, self.fixed, self.cookies = user, fixed, cookies
        self.ctype: str = ctype or ""
        self.coding: str = coding or ""


def _header_route(name: str) -> _Route:
    """(lowercased name, point mask, point path) of a header name as sent."""
    lower = name.lower()
    return _remember(_ROUTES, name, name, (lower, _HEADER_MASK.get(lower, HEADERS),
                                           ("header", lower)))


def _path(out: _Out, path: str) -> None:
    out.add(PATH, ("path",), path)
    if _PLAIN_PATH.fullmatch(path):
        return
    # Segments with odd characters also stand alone, for patterns anchored at a segment.
    for i, seg in enumerate(path.split("/")[1:17], start=1):
        if seg and not _PLAIN_SEGMENT.fullmatch(seg):
            out.add(PATH, ("path", str(i)), seg)


def _urlencoded(out: _Out, raw: str, prefix: tuple[str, ...]) -> None:
    if not raw:
        return
    points, cap = out.points, out.cap
    loose = False
    parts = raw.split("&")
    for part in parts:
        if len(points) >= cap:
            return
        raw_name, eq, value = part.partition("=")
        known = _PARAMS.get((prefix, raw_name))
        name, path, name_path, plain = known if known is not None else _param(prefix, raw_name)
        if not eq:
            # "?<script>": no name; the token itself is the value a parameter would carry.
            if name:
                points.append(Point(ARGS | ARG_NAMES, path, name))
            loose = True
            continue
        if name:
            points.append(Point(ARG_NAMES, name_path, name))
        if "%" in value or "+" in value:
            value = url_decode(value)
        if value:
            points.append(Point(ARGS, path, value))
        if not plain:
            # A "name" that is no name ("'admin', '1'" of "'admin', '1'='1'") means the
            # payload itself held the "=": the whole token is scanned too.
            out.add(ARGS, (*path, "#token"), _unquote(part))
    if loose:
        _rejoined(out, parts, prefix)


def _rejoined(out: _Out, parts: list[str], prefix: tuple[str, ...]) -> None:
    """Each value followed by tokens without "=", joined back with them as it was sent:
    scanners send a payload's "&" unencoded (Nessus, commix), and ``q=%22&del%20x&rem%20``
    carries the value ``"&del x&rem `` the split cut into three pieces."""
    i = 0
    while i < len(parts) and not out.full:
        raw_name, eq, value = parts[i].partition("=")
        j = i + 1
        while j < len(parts) and "=" not in parts[j]:
            j += 1
        if eq and j > i + 1:
            path = (*prefix, _unquote(raw_name)[:64], "#joined")
            out.add(ARGS, path, _unquote("&".join([value, *parts[i + 1:j]])))
        i = j


def _param(prefix: tuple[str, ...], raw_name: str) -> _Param:
    """(name once decoded, value path, name path, whether it reads as a parameter name)."""
    name = _unquote(raw_name)
    path = (*prefix, name[:64])
    return _remember(_PARAMS, (prefix, raw_name), raw_name,
                     (name, path, (*path, "#name"), _FORM_NAME.fullmatch(name) is not None))


def _unquote(value: str) -> str:
    if "%" in value or "+" in value:
        return url_decode(value)
    return value


def _cookies(out: _Out, header: str) -> None:
    points, cap = out.points, out.cap
    for part in header.split(";"):
        if len(points) >= cap:
            return
        name, _, value = part.strip().partition("=")
        known = _COOKIES.get(name)
        path, name_mask, name_path = known if known is not None else _cookie(name)
        if value:
            points.append(Point(COOKIES, path, value))
        if name:
            points.append(Point(name_mask, name_path, name))


def _cookie(name: str) -> _Cookie:
    """(value path, name mask, name path) of a cookie name.

    A payload in the cookie name ("<script>=1", "java.lang.Runtime=x") is scanned like a
    value too; odd-looking names also answer to arg_names rules (plain ones do not:
    "PHPSESSID" is a normal cookie name but an odd query parameter name)."""
    mask = COOKIES if _PLAIN_NAME.fullmatch(name) else COOKIES | ARG_NAMES
    return _remember(_COOKIES, name, name,
                     (("cookie", name[:64]), mask, ("cookie", name[:64], "#name")))


# ----------------------------------------------------------------------------- bodies

def _body(out: _Out, body: bytes, ctype: str) -> None:
    body = _transcode(body[: out.limits.max_value_bytes * 4])
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
    out.add(BODY | ARGS, ("body",), _content_text(body[: out.limits.max_value_bytes]))


# Binary content (an image, an archive, a protobuf message) is not encoded text: no decoder
# applies to it, and the attack text it can carry (a web shell in a JPEG comment, the
# strings of a protobuf message) is literal. Such a part or body is scanned as its printable
# runs, as strings(1) shows them, joined by a space: decoding and scanning a 3 KB JPEG whole
# cost ~20x a typical request (each "+", quote or "&" in its bytes fired a transform).
# Random bytes are ~11% control bytes, text in any language ~0%.
BINARY_SNIFF: Final = 512  # bytes looked at to call content binary
BINARY_MIN: Final = 256  # shorter content is cheap to scan whole: kept as it is
STRINGS_MIN: Final = 6  # shortest printable run kept (random bytes give runs of 4 every ~50 bytes)
_CONTROL_BYTES: Final = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
_PRINTABLE_RUN: Final = re.compile(rb"(?:[\t\n\r\x20-\x7e]|[\xc2-\xf4][\x80-\xbf]{1,3}){%d,}"
                                   % STRINGS_MIN)


def _is_binary(data: bytes) -> bool:
    """At least BINARY_MIN bytes, more than 1 in 32 of the first ones control bytes (not
    tab or line breaks)."""
    head = data[:BINARY_SNIFF]
    return len(data) >= BINARY_MIN and \
        len(head) - len(head.translate(None, _CONTROL_BYTES)) > len(head) // 32


def _content_text(data: bytes) -> str:
    """A body or part's content as scanned: its text, or for binary content its strings."""
    if _is_binary(data):
        data = b" ".join(_PRINTABLE_RUN.findall(data))
    return bytes_to_text(data)


_BOMS: Final = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
                (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8"))
# Where the NUL bytes of ASCII text fall in each wide encoding (XML 1.0 appendix F, RFC 4627)
_WIDE: Final[dict[tuple[bool, ...], str]] = {
    (False, True, True, True): "utf-32-le", (True, True, True, False): "utf-32-be",
    (False, True, False, True): "utf-16-le", (True, False, True, False): "utf-16-be"}


def _transcode(body: bytes) -> bytes:
    """A UTF-16/32 body (a byte-order mark, or ASCII interleaved with NULs as XML and JSON
    parsers detect it) as UTF-8, a UTF-8 mark dropped. # SECURITY: Java XML parsers and
    JSON libraries read these encodings: an XXE or JSON payload sent in UTF-16 must not
    pass as unreadable bytes."""
    if len(body) < 4 or (body[0] not in (0, 0xEF, 0xFE, 0xFF) and body[1] != 0):
        return body  # the common case: a body opening with an ASCII byte pair
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(codec, "replace").encode()
    wide = _WIDE.get(tuple(b == 0 for b in body[:4]))
    if wide is None or not any(0x20 <= b < 0x7F for b in body[:4]):
        return body
    return body.decode(wide, "replace").encode()


_FORM: Final = re.compile(rb"[^\s=&]{1,128}=[^\s&]*(?:&[^\s=&]{1,128}=[^\s&]*)*")


def _looks_form(body: bytes) -> bool:
    return len(body) < 65536 and _FORM.fullmatch(body.strip()) is not None


def _json(out: _Out, body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # includes nesting deeper than orjson's own limit
    stack: list[tuple[tuple[str, ...], Any]] = [(("json",), doc)]
    depth_cap = out.limits.max_json_depth + 1
    points, cap = out.points, out.cap
    while stack and len(points) < cap:
        path, node = stack.pop()
        if isinstance(node, str):
            if node:
                points.append(Point(ARGS, path, node))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            continue
        elif len(path) > depth_cap:
            continue
        elif isinstance(node, dict):
            _json_object(points, path, node, stack)
        elif isinstance(node, list):
            items: list[Any] = node[:1024]
            # Pushed last first: they pop in document order.
            stack.extend([((*path, str(i)), items[i]) for i in range(len(items) - 1, -1, -1)])
    return True


def _json_object(points: list[Point], path: tuple[str, ...], node: dict[str, Any],
                 stack: list[tuple[tuple[str, ...], Any]]) -> None:
    # The keys are points now, the values are pushed to be walked next, in order.
    children = []
    for key, value in list(node.items())[:1024]:
        key_path = (*path, key[:64])
        if key:
            points.append(Point(ARG_NAMES, (*key_path, "#name"), key))
        children.append((key_path, value))
    children.reverse()
    stack += children


_XML_TAG: Final = re.compile(r"<([A-Za-z_][\w:.-]{0,63})((?:[^>\"']|\"[^\"]*\"|'[^']*')*)/?>")
_XML_ATTR: Final = re.compile(r"([\w:.-]{1,64})\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_TEXT: Final = re.compile(r">([^<]+)<|<!\[CDATA\[(.*?)\]\]>", re.S)


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


_BOUNDARY: Final = re.compile(r"boundary=(?:\"([^\"]{1,200})\"|([^;,\s]{1,200}))")
_DISPOSITION: Final = re.compile(rb"""\b(name|filename)\*?=(?:"((?:[^"\\]|\\.)*)"|([^;\r\n]*))""",
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
            _content_text(content[: out.limits.max_value_bytes]))


_PART_HEADER: Final = re.compile(rb"^([\w-]{1,64})[ \t]*:[ \t]*(.*?)\r?$", re.M)


def _part_headers(out: _Out, name: str, head: bytes) -> None:
    """A part's own headers but Content-Disposition (already split into name/filename):
    its Content-Type (``charset=utf-7`` to slip past filters) or any header a client
    invented carries input like a request header."""
    for m in _PART_HEADER.finditer(head[:4096]):
        hname = m.group(1).decode("ascii").lower()
        if hname != "content-disposition":
            out.add(HEADERS, ("body", "multipart", name, "#header", hname),
                    bytes_to_text(m.group(2)))
