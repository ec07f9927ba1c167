"""Mirror copy -> request record v1 (node/records.py): the pure part of the mirror listener.

Where it sits: ``mirror.MirrorProtocol`` parses a request (``http1``) and calls
``MirrorRecordBuilder.build``; the record then goes to the stream writer.

Text fields are ``str`` when the wire bytes are valid UTF-8, else the exact ``bytes``. Host:
Envoy's mirror appends ``-shadow`` to the host name (before the port); it is removed here so
processing and reports see the real host.
"""

from __future__ import annotations

import time
from typing import Any

from node.receiver.http1 import Request
from node.receiver.realip import RealIp
from node.records import RECORD_VERSION, Text

SHADOW_SUFFIX = "-shadow"
# Headers (lowercase) whose values become record fields; the parser collects them.
HOST, REQUEST_ID, PROTO, SERVER_ADDR, SERVER_PORT = (
    "host", "x-request-id", "x-forwarded-proto", "x-server-addr", "x-server-port")


def text(raw: Any) -> Text:
    """``str`` for valid UTF-8, else the exact bytes (record contract)."""
    if type(raw) is str:
        return raw
    try:
        return raw.decode("utf-8")  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        return raw  # type: ignore[no-any-return]


def _str(raw: Any) -> str:
    """Any header value as str for parsing (bytes map 1:1 through latin-1)."""
    return raw if type(raw) is str else raw.decode("latin-1")  # type: ignore[no-any-return]


def _back(value: str, like: Any) -> Text:
    """Undo ``_str`` for a part of a bytes value, then apply the record's text rule."""
    return value if type(like) is str else text(value.encode("latin-1"))


def split_host(raw: str) -> tuple[str, int]:
    """(host without ``-shadow``, port or 0) from a Host value or an authority."""
    host, port = raw, ""
    if raw.startswith("["):
        end = raw.find("]")
        if end > 0:
            host, port = raw[:end + 1], raw[end + 1:].removeprefix(":")
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    if host.lower().endswith(SHADOW_SUFFIX):
        host = host[:-len(SHADOW_SUFFIX)]
    number = int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else 0
    return host, number if number <= 65535 else 0


def split_target(target: str) -> tuple[str, str, str]:
    """(authority, path, query) of origin-form or absolute-form request targets."""
    authority = ""
    scheme_end = target.find("://", 0, 12)
    if not target.startswith("/") and scheme_end > 0:
        rest = target[scheme_end + 3:]
        slash = rest.find("/")
        authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    path, _, query = target.partition("?")
    return authority, path, query


class MirrorRecordBuilder:
    """Built once per listener; ``build`` runs once per mirrored request (hot path)."""

    def __init__(self, realip: RealIp) -> None:
        self.realip = realip
        # What the parser must collect for us (it lowercases names anyway for framing).
        self.capture = frozenset({HOST, REQUEST_ID, PROTO, SERVER_ADDR, SERVER_PORT,
                                  realip.header})

    def build(self, req: Request, peer: str, record_id: str) -> dict[str, Any]:
        found = req.found
        if type(req.target) is str:  # ASCII head: every field is already str
            headers: Any = req.headers
            method: Text = req.method
        else:
            headers = [(text(n), text(v)) for n, v in req.headers]
            method = text(req.method)
        target = req.target
        authority, path, query = split_target(_str(target))
        host_raw = found[HOST][0] if HOST in found else authority
        host, port = split_host(_str(host_raw))
        ip_values = found.get(self.realip.header)
        client_ip, chain = self.realip.resolve(peer, _latin1(ip_values) if ip_values else ())
        record: dict[str, Any] = {
            "v": RECORD_VERSION, "id": record_id, "ts": time.time(), "source": "mirror",
            "request_id": _first(found, REQUEST_ID),
            "client_ip": client_ip, "peer_ip": chain[-1], "ip_chain": chain,
            "method": method, "scheme": self._scheme(found, peer),
            "host": _back(host, host_raw), "port": port, "path": _back(path, target),
            "query": _back(query, target), "http_version": req.version, "headers": headers,
            "body": req.body, "body_size": req.body_size, "body_truncated": req.body_truncated,
        }
        if SERVER_ADDR in found or SERVER_PORT in found:
            _server_fields(record, found)
        return record

    def _scheme(self, found: dict[str, list[Any]], peer: str) -> str:
        proto = _first(found, PROTO) if PROTO in found else ""
        # SECURITY: X-Forwarded-Proto is believed only from a trusted proxy, like the client IP.
        if proto in ("http", "https") and self.realip.lookup(peer)[1]:
            return proto
        return "http"


def _latin1(values: list[Any]) -> list[str]:
    return [_str(v) for v in values]


def _first(found: dict[str, list[Any]], name: str) -> str:
    """First value of a header as str ("" when absent; invalid UTF-8 replaced)."""
    values = found.get(name)
    if not values:
        return ""
    value = values[0]
    return value if type(value) is str else value.decode("utf-8", "replace")


def _server_fields(record: dict[str, Any], found: dict[str, list[Any]]) -> None:
    if SERVER_ADDR in found:
        record["server_addr"] = _first(found, SERVER_ADDR)
    port = _first(found, SERVER_PORT).strip()
    if port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535:
        record["server_port"] = int(port)
