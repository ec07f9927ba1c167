"""Lua plugin record -> request record v1: per-record validation for ``POST /v1/batch``.

Where it sits: ``batch.py`` offers each record of a batch to the msgspec fast path
(``batch_fast``) first; a record it declines (anything but the plugin's canonical form:
defaults to fill, bin text, nil, unknown fields, a body to cap, or an invalid record) is
unpacked alone and goes through ``BatchRecordBuilder.pack``. A ``RecordError`` rejects that
record only (its index and message go back to the plugin), the others are queued.

The node sets ``v`` and assigns ``id``, ``client_ip``, ``peer_ip`` and ``ip_chain`` (the
plugin sends only ``v: 1`` of them): anything a batch sends in those fields is dropped, as are
unknown fields.
Text fields may arrive as msgpack str or bin; they become ``str`` when valid UTF-8, else
``bytes`` (the record contract). Bodies are capped at ``max_body_bytes`` like the mirror's.

An item is validated in place, and when nothing had to change, its original msgpack bytes
are reused and only the node's fields are appended (``splice``) instead of packing the whole
record again. This module defines the semantics; ``batch_fast`` must give the same record for
what it accepts (tests/receiver/test_batch_fast.py compares them).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import msgpack

from node.config import ReceiverConfig
from node.receiver.realip import RealIp
from node.records import RECORD_VERSION, SOURCES

BATCH_SOURCES = frozenset(SOURCES) - {"mirror"}
MAX_META_KEYS = 64
MAX_META_VALUE = 1024  # characters of one meta string value
SHADOW = "-shadow"


class RecordError(ValueError):
    """One record is invalid; the message names the field."""


# ---------------------------------------------------------------- value checks
# Each returns the value to store: the same object when it is already canonical.

def check_text(value: Any, field: str) -> Any:
    """str (valid UTF-8) or bytes (exact bytes otherwise) from a msgpack str or bin."""
    tp = type(value)
    if tp is str:
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # surrogate-escaped invalid UTF-8 (see batch.unpack_batch)
            return value.encode("utf-8", "surrogateescape")
        return value
    if tp is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    raise RecordError(f"{field}: expected a string")


def check_short(value: Any, field: str) -> Any:
    """Identifier-like fields (scheme, request id, ...): always ``str`` (invalid bytes
    replaced). No length cap of their own: the batch size bounds them."""
    if type(value) is not str or not value.isascii():
        value = check_text(value, field)
        if type(value) is bytes:
            value = value.decode("utf-8", "replace")
    return value


def check_bytes(value: Any, field: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")
    raise RecordError(f"{field}: expected bytes")


def check_int(value: Any, field: str, high: int = 65535) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise RecordError(f"{field}: expected an integer in [0, {high}]")
    return value


def check_size(value: Any, field: str) -> int:
    if type(value) is not int or not 0 <= value <= 2**53:
        raise RecordError(f"{field}: expected an integer in [0, 2**53]")
    return value


def check_status(value: Any, field: str) -> int:
    return check_int(value, field, 999)


def check_bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise RecordError(f"{field}: expected a boolean")
    return value


def check_headers(value: Any, field: str, limit: int) -> Any:
    """A list of [name, value] text pairs; a new list only when a pair had to change."""
    if type(value) is not list or len(value) > limit:
        raise RecordError(f"{field}: expected a list of at most {limit} [name, value] pairs")
    for pair in value:
        # str.isascii() is O(1): the common case costs a few type checks and flag reads.
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str or \
                type(pair[1]) is not str or not pair[0].isascii() or not pair[1].isascii():
            return _convert_headers(value, field)
    return value


def _convert_headers(value: list[Any], field: str) -> list[Any]:
    out = value
    for i, pair in enumerate(value):
        if type(pair) is not list or len(pair) != 2:
            raise RecordError(f"{field}: expected a list of [name, value] pairs")
        name, val = pair
        new = [check_text(name, field), check_text(val, field)]
        if new[0] is not name or new[1] is not val:
            out = list(value) if out is value else out
            out[i] = new
    return out


_SCALARS = frozenset({int, float, bool, type(None)})


def _headers_checker(limit: int, value: Any, field: str) -> Any:
    return check_headers(value, field, limit)


def check_meta(value: Any, field: str) -> dict[str, Any]:
    """Scalar values only, bounded; a new map only when something had to change."""
    if type(value) is not dict or len(value) > MAX_META_KEYS:
        raise RecordError(f"meta: expected a map of at most {MAX_META_KEYS} keys")
    out = value
    for key, item in value.items():
        tp = type(item)
        if type(key) is str and key.isascii() and (
                tp in _SCALARS or (tp is str and item.isascii() and len(item) <= MAX_META_VALUE)):
            continue  # the common case: no call (isascii is O(1) on str)
        name = check_short(key, "meta")
        new = item
        if type(item) in (str, bytes):
            new = check_short(item, f"meta.{name}")[:MAX_META_VALUE]
        elif not (item is None or type(item) in (bool, int, float)):
            raise RecordError(f"meta.{name}: expected a string, number, boolean or nil")
        if name is not key or new is not item:
            out = dict(value) if out is value else out
            out.pop(key, None)
            out[name] = new
    return out


def check_ts(value: Any, field: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise RecordError("ts: expected seconds since the epoch")
    return value


def check_source(value: Any, field: str) -> str:
    if value not in BATCH_SOURCES:
        raise RecordError(f"source: one of {', '.join(sorted(BATCH_SOURCES))}")
    return value  # type: ignore[no-any-return]


# Fields the plugin may send, with their check. Everything else is dropped.
BASE_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "ts": check_ts, "source": check_source, "request_id": check_short, "method": check_text,
    "scheme": check_short, "host": check_text, "port": check_int, "path": check_text,
    "query": check_text, "http_version": check_short, "body": check_bytes,
    "body_size": check_size, "body_truncated": check_bool,
    "server_addr": check_short, "server_port": check_int, "meta": check_meta,
}
RESPONSE_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "status": check_status, "body": check_bytes, "body_size": check_size,
    "body_truncated": check_bool,
}


RESPONSE_NAMES = {key: "response." + key for key in RESPONSE_CHECKS}
RESPONSE_FAST: dict[str, type] = {"body": bytes, "body_truncated": bool}
# Fields whose value needs no check beyond its type (when the batch was valid UTF-8): the
# hot path skips the function call for them.
FAST_TYPES: dict[str, type] = {"method": str, "host": str, "path": str, "query": str,
                               "body": bytes, "body_truncated": bool, "request_id": str,
                               "scheme": str, "http_version": str, "server_addr": str}


def check_map(item: dict[str, Any], checks: dict[str, Callable[[Any, str], Any]],
              names: dict[str, str], fast: dict[str, type]) -> bool:
    """Check a map in place; drop unknown keys. True when anything had to change.
    ``names``: field names for error messages; ``fast``: fields checked by type alone."""
    changed = not item.keys() <= checks.keys()
    if changed:
        for key in item.keys() - checks.keys():
            del item[key]  # SECURITY: node-assigned fields are never taken from outside
    absent = None
    for key, value in item.items():
        if type(value) is fast.get(key):
            continue
        if value is None:  # nil is "not sent" (Lua tables cannot hold nil anyway)
            absent = [*(absent or ()), key]
            continue
        new = checks[key](value, names.get(key, key))
        if new is not value:
            item[key], changed = new, True
    for key in absent or ():
        del item[key]
    return changed or absent is not None


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 0x10000:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def map_size(raw: bytes) -> tuple[int, int]:
    """(entries, header length) of the msgpack map at the start of ``raw``."""
    if raw[0] & 0xF0 == 0x80:
        return raw[0] & 0x0F, 1
    if raw[0] == 0xDE:
        return int.from_bytes(raw[1:3], "big"), 3
    return int.from_bytes(raw[1:5], "big"), 5


def splice(raw: bytes, fields: int, extra: dict[str, Any]) -> bytes:
    """``raw`` (a packed map of ``fields`` keys) with ``extra``'s keys appended, unpacked-free."""
    head = map_size(raw)[1]
    packed = msgpack.packb(extra, use_bin_type=True)
    extra_head = 1 if len(extra) < 16 else 3
    return _map_header(fields + len(extra)) + raw[head:] + packed[extra_head:]


class BatchRecordBuilder:
    """Built once per listener from the receiver config; ``pack`` runs per record."""

    def __init__(self, cfg: ReceiverConfig, realip: RealIp,
                 new_id: Callable[[], str]) -> None:
        self.max_body = cfg.max_body_bytes
        self.realip = realip
        self.new_id = new_id
        limit = cfg.max_header_count
        headers = {"headers": functools.partial(_headers_checker, limit)}
        self.response_checks = RESPONSE_CHECKS | headers
        self.checks = BASE_CHECKS | headers | {"response": self._check_response}

    def pack(self, item: Any, raw: bytes, tcp_peer: str,
             lossy: bool = False) -> tuple[bytes, str]:
        """(packed v1 record, source) from one batch item and its original bytes; ``lossy``
        when the batch had invalid UTF-8 in msgpack str (decoded with surrogateescape)."""
        changed = self.validate(item, lossy)
        extra = self._node_fields(item, tcp_peer)
        # SECURITY: a map with a duplicate key decodes to fewer keys than its header says;
        # splicing it would misalign the entry, so it is packed again.
        if changed or map_size(raw)[0] != len(item):
            item.update(extra)
            return msgpack.packb(item, use_bin_type=True), item["source"]
        source = item.get("source", "lua")
        return splice(raw, len(item), extra), source

    def record(self, item: Any, tcp_peer: str) -> dict[str, Any]:
        """The v1 record as a dict (tools and tests; the listener uses ``pack``)."""
        self.validate(item)
        item.update(self._node_fields(item, tcp_peer))
        return item  # type: ignore[no-any-return]

    def validate(self, item: Any, lossy: bool = False) -> bool:
        """Check ``item`` in place (RecordError); True when anything had to be changed."""
        if type(item) is not dict:
            raise RecordError("record: expected a map")
        # In a lossy batch a str may hide invalid UTF-8: every text gets the full check.
        changed = check_map(item, self.checks, {}, {} if lossy else FAST_TYPES)
        for field in ("method", "path"):
            if field not in item:
                raise RecordError(f"{field}: required")
        if not item["method"]:
            raise RecordError("method: must not be empty")
        if self._cap_body(item):
            changed = True
        host = item.get("host")
        if type(host) is str and host.lower().endswith(SHADOW):
            item["host"], changed = host[:-len(SHADOW)], True
        return changed

    def _cap_body(self, item: dict[str, Any]) -> bool:
        """Cap the body and make body_size / body_truncated consistent; True if changed."""
        body = item.get("body", b"")
        size = item.get("body_size", len(body))
        if len(body) <= self.max_body and size >= len(body) and \
                item.get("body_truncated", False) == (size > len(body)):
            return False
        item["body_size"] = max(size, len(body))
        item["body"] = body[:self.max_body]
        item["body_truncated"] = item["body_size"] > len(item["body"])
        return True

    def _check_response(self, value: Any, field: str) -> Any:
        if type(value) is not dict:
            raise RecordError("response: expected a map")
        changed = check_map(value, self.response_checks, RESPONSE_NAMES, RESPONSE_FAST)
        changed = self._cap_body(value) or changed
        if len(value) < 5:  # defaults of the missing fields
            body = value.get("body", b"")
            for key, default in (("status", 0), ("headers", []), ("body", b""),
                                 ("body_size", len(body)), ("body_truncated", False)):
                value.setdefault(key, default)
            changed = True
        return dict(value) if changed else value

    def _node_fields(self, item: dict[str, Any], tcp_peer: str) -> dict[str, Any]:
        """What the node assigns (id, resolved addresses) plus defaults of missing fields."""
        client_ip, chain = self._resolve_ip(item, tcp_peer)
        extra: dict[str, Any] = {"v": RECORD_VERSION, "id": self.new_id(),
                                 "client_ip": client_ip, "peer_ip": chain[-1],
                                 "ip_chain": chain}
        if not item.keys() >= DEFAULTED:
            for key, default in _defaults(item).items():
                if key not in item:
                    extra[key] = default
        return extra

    def _resolve_ip(self, item: dict[str, Any], tcp_peer: str) -> tuple[str, list[str]]:
        # The downstream peer Envoy saw is the request's peer; the batch sender (Envoy
        # itself) is only a fallback.
        meta = item.get("meta")
        direct = meta.get("direct_remote_address") if meta else None
        peer = direct if type(direct) is str and direct else tcp_peer
        wanted, size = self.realip.header, len(self.realip.header)
        values = [v if type(v) is str else v.decode("latin-1")
                  for n, v in item.get("headers", ())
                  if len(n) == size
                  and (n if type(n) is str else n.decode("latin-1")).lower() == wanted]
        return self.realip.resolve(peer, values)


DEFAULTED = frozenset({"ts", "source", "request_id", "scheme", "host", "port", "query",
                       "http_version", "headers", "body", "body_size", "body_truncated"})


def _defaults(item: dict[str, Any]) -> dict[str, Any]:
    body = item.get("body", b"")
    return {"ts": time.time(), "source": "lua", "request_id": "", "scheme": "http",
            "host": "", "port": 0, "query": "", "http_version": "1.1", "headers": [],
            "body": b"", "body_size": len(body), "body_truncated": False}
