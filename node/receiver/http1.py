"""A lenient, bounded, byte-exact HTTP/1.x request parser (sans I/O) for the mirror listener.

Where it sits: ``mirror.MirrorProtocol`` feeds it the bytes of a connection; it returns the
complete requests (head + capped body), which the protocol turns into records.

Why not aiohttp's parser: the mirror must accept whatever a proxy forwards, and llhttp (what
aiohttp uses) refuses methods it does not know (``CUST``, lowercase ``get``), bytes >= 0x80
in the path and control bytes in header values, all of which an attacker can put in a
request that Envoy then mirrors; the record must keep those exact bytes. This parser is strict
only where it must be: framing (Content-Length / chunked) and the size limits.

Guarantees: never raises anything but ``HttpError`` on any input; memory per connection is
bounded by ``max_head_bytes`` plus the kept body (``max_body_bytes``); a body is always read
to its end whatever its size (the bytes over the cap are counted and dropped), because a
mirror target that reads slowly stalls the production request behind Envoy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
MAX_CHUNK_LINE = 4096  # chunk size + extensions
_CRLF = (13, 10)
# Parser states
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS = range(6)


class HttpError(Exception):
    """A request the listener answers with ``status`` and closes; ``reason`` is the metric
    label (node.metrics.REJECT_REASONS)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Request:
    """Text fields are ``str`` when the head was pure ASCII, else the exact ``bytes``."""

    method: Any
    target: Any
    version: str  # "1.0" / "1.1"
    headers: list[tuple[Any, Any]]  # wire order and case, duplicates kept
    head_size: int
    keep_alive: bool
    found: dict[str, list[Any]]  # values of the framing and ``capture`` headers, by lower name
    body: bytes = b""
    body_size: int = 0
    body_truncated: bool = False


@dataclass(slots=True)
class _Framing:
    length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False


class RequestParser:
    """One per connection. ``feed`` returns the requests completed by ``data``."""

    def __init__(self, *, max_head_bytes: int, max_line_bytes: int, max_headers: int,
                 max_body_bytes: int, capture: frozenset[str] = frozenset()) -> None:
        self.max_head = max_head_bytes
        self.max_line = max_line_bytes
        self.max_headers = max_headers
        self.max_body = max_body_bytes
        self._buf = bytearray()
        self._scan_from = 0  # where to resume looking for the end of the head
        self._state = HEAD
        self._req: Request | None = None
        self._remaining = 0  # body bytes (LENGTH) or chunk bytes (CHUNK_DATA) still expected
        self._parts: list[bytes] = []
        self._kept = 0
        self.expect_continue = False  # set when a head asks for "100 Continue"; caller clears
        self._wanted = _wanted_names(capture | FRAMING)

    @property
    def idle(self) -> bool:
        """No partial request buffered (a clean place to close a keep-alive connection)."""
        return self._state == HEAD and not self._buf

    def feed(self, data: bytes) -> list[Request]:
        self._buf += data
        done: list[Request] = []
        while self._step(done):
            pass
        return done

    def _step(self, done: list[Request]) -> bool:
        """Advance the state machine once; False when more data is needed."""
        state = self._state
        if state == HEAD:
            return self._head(done)
        if state == LENGTH:
            return self._length_body(done)
        if state == CHUNK_SIZE:
            return self._chunk_size(done)
        if state == CHUNK_DATA:
            return self._chunk_data()
        if state == CHUNK_END:
            return self._chunk_end()
        return self._trailers(done)

    # ------------------------------------------------------------ head

    def _head(self, done: list[Request]) -> bool:
        buf = self._buf
        while buf and buf[0] in _CRLF:  # RFC 9112 2.2: ignore empty lines before a request
            del buf[0]
        if not buf:
            return False
        start, end = _head_end(buf, self._scan_from)
        if start < 0:
            if len(buf) > self.max_head:
                raise HttpError(431, "header_flood", "request head too large")
            self._scan_from = max(0, len(buf) - 3)
            return False
        if end > self.max_head:
            raise HttpError(431, "header_flood", "request head too large")
        with memoryview(buf) as view:
            head = bytes(view[:start])  # one copy
        del buf[:end]
        self._scan_from = 0
        self._req = self._parse_head(head, end)
        if self._state == HEAD:  # no body
            self._finish(done)
        return True

    def _parse_head(self, head: bytes, head_size: int) -> Request:
        # A pure-ASCII head (nearly all of them) is parsed as str: every field is then already
        # the record's text type, with no decode per field. Others keep their exact bytes.
        syn = STR if head.isascii() else BYTES
        text = head.decode("ascii") if syn is STR else head
        lines = _split_lines(text, syn)
        if len(lines) - 1 > self.max_headers:
            raise HttpError(431, "header_flood", "too many header fields")
        method, target, version = self._request_line(lines[0], syn)
        headers, found = self._header_fields(lines, syn)
        framing = _framing(found, version)
        req = Request(method, target, version, headers, head_size, framing.keep_alive, found)
        self._start_body(req, framing)
        return req

    def _request_line(self, line: Any, syn: _Syntax) -> tuple[Any, Any, str]:
        if len(line) > self.max_line:
            raise HttpError(414, "header_too_long", "request line too long")
        method, sp1, rest = line.partition(syn.sp)
        target, sp2, version = rest.strip(syn.sp).rpartition(syn.sp)
        target = target.strip(syn.sp)
        if not (sp1 and sp2 and method and target) or version not in syn.versions:
            raise HttpError(400, "bad_request", "not an HTTP/1.x request line")
        return method, target, syn.versions[version]

    def _header_fields(self, lines: list[Any],
                       syn: _Syntax) -> tuple[list[tuple[Any, Any]], dict[str, list[Any]]]:
        headers: list[tuple[Any, Any]] = []
        found: dict[str, list[Any]] = {}
        append, get = headers.append, self._wanted[syn.kind].get  # hot loop: locals only
        max_line, colon, ws, blank = self.max_line, syn.colon, syn.ws, syn.blank
        for i in range(1, len(lines)):
            line = lines[i]
            if len(line) > max_line:
                raise HttpError(431, "header_too_long", "header field too long")
            if line.startswith(blank) and headers:  # obsolete line folding: keep the text
                _fold(headers, found, line.strip(ws), syn, self._wanted[syn.kind])
                continue
            name, sep, value = line.partition(colon)
            # RFC 9112 5.1: no whitespace between the name and the colon (request smuggling).
            if not sep or not name or name.endswith(blank):
                raise HttpError(400, "bad_request", "malformed header field")
            value = value.strip(ws)
            append((name, value))
            key = get(name.lower())
            if key is not None:
                found.setdefault(key, []).append(value)
        return headers, found

    def _start_body(self, req: Request, framing: _Framing) -> None:
        self._parts, self._kept = [], 0
        if framing.chunked:
            self._state = CHUNK_SIZE
        elif framing.length:
            self._state, self._remaining = LENGTH, framing.length
        else:
            self._state = HEAD
            return
        self.expect_continue = framing.expect_continue

    # ------------------------------------------------------------ body

    def _consume(self, n: int) -> None:
        """Take ``n`` body bytes off the buffer (counted, kept up to the cap)."""
        with memoryview(self._buf) as view, view[:n] as part:
            self._keep(part)
        del self._buf[:n]
        self._remaining -= n

    def _keep(self, data: memoryview) -> None:
        """Count every body byte; keep only up to the cap (the rest is drained and dropped)."""
        req = self._req
        assert req is not None
        req.body_size += len(data)
        room = self.max_body - self._kept
        if room > 0:
            part = bytes(data[:room])
            self._parts.append(part)
            self._kept += len(part)
        if req.body_size > self.max_body:
            req.body_truncated = True

    def _finish(self, done: list[Request]) -> None:
        req = self._req
        assert req is not None
        req.body = b"".join(self._parts)
        self._parts, self._kept, self._req = [], 0, None
        self.expect_continue = False  # the body is here: "100 Continue" would come too late
        self._state = HEAD
        done.append(req)

    def _take_remaining(self) -> bool:
        """Consume what the buffer holds of the current body run (``_remaining`` bytes of a
        Content-Length body or of a chunk); True once all of it is here."""
        buf = self._buf
        if not buf:
            return False
        self._consume(min(self._remaining, len(buf)))
        return not self._remaining

    def _length_body(self, done: list[Request]) -> bool:
        if not self._take_remaining():
            return False
        self._finish(done)
        return True

    def _line(self, limit: int) -> bytes | None:
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > limit:
                raise HttpError(400, "bad_request", "chunk line too long")
            return None
        line = bytes(buf[:end]).rstrip(b"\r")
        del buf[:end + 1]
        return line

    def _chunk_size(self, done: list[Request]) -> bool:
        line = self._line(MAX_CHUNK_LINE)
        if line is None:
            return False
        size = line.split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size):
            raise HttpError(400, "bad_request", "bad chunk size")
        self._remaining = int(size, 16)
        self._state = CHUNK_DATA if self._remaining else TRAILERS
        return True

    def _chunk_data(self) -> bool:
        if not self._take_remaining():
            return False
        self._state = CHUNK_END
        return True

    def _chunk_end(self) -> bool:
        line = self._line(2)
        if line is None:
            return False
        if line:
            raise HttpError(400, "bad_request", "chunk not followed by CRLF")
        self._state = CHUNK_SIZE
        return True

    def _trailers(self, done: list[Request]) -> bool:
        # Trailer fields are read and dropped (bounded like a head).
        line = self._line(self.max_line)
        if line is None:
            return False
        if not line:
            self._finish(done)
        return True


@dataclass(frozen=True, slots=True)
class _Syntax:
    """The literals of the head parser for one text type (str for ASCII heads, else bytes)."""

    kind: str
    nl: Any
    cr: Any
    crlf: Any
    sp: Any
    colon: Any
    ws: Any
    blank: tuple[Any, ...]
    versions: dict[Any, str]


STR = _Syntax("str", "\n", "\r", "\r\n", " ", ":", " \t", (" ", "\t"),
              {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"})
BYTES = _Syntax("bytes", b"\n", b"\r", b"\r\n", b" ", b":", b" \t", (b" ", b"\t"),
                {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"})
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "expect"})


@functools.lru_cache(maxsize=16)
def _wanted_names(names: frozenset[str]) -> dict[str, dict[Any, str]]:
    """Lowercase header name (as str and as bytes) -> its str key in ``Request.found``."""
    return {"str": {n: n for n in names}, "bytes": {n.encode("latin-1"): n for n in names}}


def _head_end(buf: bytearray, scan_from: int) -> tuple[int, int]:
    """(start, end) of the blank line ending a head, or (-1, -1). CRLF is what every proxy
    sends; bare LF is accepted too (RFC 9112 2.2). ``find`` is memchr-fast, a regex is not."""
    best = (-1, -1)
    for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n"):
        at = buf.find(sep, scan_from)
        if at >= 0 and (best[0] < 0 or at < best[0]):
            best = (at, at + len(sep))
    if best[0] > 0 and buf[best[0] - 1] == 13:  # "...\r\n\n": the CR ends the last line
        best = (best[0] - 1, best[1])
    return best


def _split_lines(text: Any, syn: _Syntax) -> list[Any]:
    if syn.cr not in text:
        return text.split(syn.nl)  # type: ignore[no-any-return]
    if text.count(syn.nl) == text.count(syn.crlf):  # CRLF everywhere: one C-level split
        return text.split(syn.crlf)  # type: ignore[no-any-return]
    return [line[:-1] if line[-1:] == syn.cr else line for line in text.split(syn.nl)]


def _fold(headers: list[tuple[Any, Any]], found: dict[str, list[Any]], more: Any,
          syn: _Syntax, wanted: dict[Any, str]) -> None:
    name, value = headers[-1]
    headers[-1] = (name, value + syn.sp + more)
    key = wanted.get(name.lower())
    if key is not None:
        found[key][-1] = headers[-1][1]


def _latin1(values: list[Any]) -> list[str]:
    return [v if type(v) is str else v.decode("latin-1") for v in values]


def _framing(found: dict[str, list[Any]], version: str) -> _Framing:
    f = _Framing(keep_alive=version == "1.1")
    if FRAMING.isdisjoint(found):  # a GET without framing headers: nothing to look at
        return f
    lengths = [v.strip() for value in _latin1(found.get("content-length", []))
               for v in value.split(",")]
    codings = [v.strip().lower() for value in _latin1(found.get("transfer-encoding", []))
               for v in value.split(",") if v.strip()]
    for value in _latin1(found.get("connection", [])):
        tokens = {t.strip().lower() for t in value.split(",")}
        f.keep_alive = "close" not in tokens and (f.keep_alive or "keep-alive" in tokens)
    expect = _latin1(found.get("expect", []))
    f.expect_continue = bool(expect) and expect[-1].lower() == "100-continue"
    if codings:
        if codings[-1] != "chunked":
            raise HttpError(400, "bad_request", "transfer-encoding without final chunked")
        f.chunked = True
        f.keep_alive = f.keep_alive and not lengths  # SECURITY: ambiguous framing: close
    elif lengths:
        f.length = _content_length(lengths)
    return f


def _content_length(values: list[str]) -> int:
    first = values[0]
    if not (first.isascii() and first.isdigit()) or len(first) > 18 or \
            any(v != first for v in values):
        # SECURITY: conflicting or non-numeric lengths make the framing ambiguous.
        raise HttpError(400, "bad_request", "bad content-length")
    return int(first)
