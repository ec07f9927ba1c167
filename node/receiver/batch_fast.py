"""Fast path of ``POST /v1/batch``: msgspec decodes and validates a canonical record in C.

Where it sits: ``batch.py`` splits a batch into the byte spans of its records
(``record_spans``) and offers each span to ``FastRecords.pack``. A record it declines
(``None``) takes the per-record Python path (``batch_record``), which is also the only one
that writes error messages. So this path only has to accept a subset of what
``batch_record`` accepts, and give the same record for it. Canonical here means what the Lua
plugin writes:

- every field the plugin always writes is present, text as msgpack str (valid UTF-8), no nil,
  no unknown or node-assigned field (``v: 1`` is allowed); a response has its five fields;
- bodies within ``max_body_bytes`` with a consistent ``body_size`` / ``body_truncated``,
  header lists within ``max_header_count``, a host without ``-shadow``, meta values of at most
  ``MAX_META_VALUE`` characters.

Such a record is queued as its original bytes plus the node's fields (``id``, ``client_ip``,
``peer_ip``, ``ip_chain``, and ``v`` when absent): nothing is packed again, and the only
Python work per record is a few checks, the id and a cached real-IP answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Literal

import msgpack
import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from node.config import ReceiverConfig
from node.receiver.batch_record import (
    BATCH_SOURCES,
    MAX_META_KEYS,
    MAX_META_VALUE,
    SHADOW,
    map_size,
)
from node.receiver.realip import RealIp
from node.records import RECORD_VERSION

Port = Annotated[int, Meta(ge=0, le=65535)]
Size = Annotated[int, Meta(ge=0, le=2**53)]
Seconds = Annotated[float, Meta(ge=0, le=sys.float_info.max)]  # finite, not negative
Headers = list[tuple[str, str]]
MetaValue = Annotated[str, Meta(max_length=MAX_META_VALUE)] | int | float | bool | None
MetaMap = Annotated[dict[str, MetaValue], Meta(max_length=MAX_META_KEYS)]
BatchSource = Literal[tuple(sorted(BATCH_SOURCES))]  # type: ignore[valid-type]

_IP_CACHE_MAX = 4096  # (peer, header values) answers kept; proxies and clients repeat


class FastResponse(Struct, forbid_unknown_fields=True, gc=False):
    status: Annotated[int, Meta(ge=0, le=999)]
    headers: Headers
    body: bytes
    body_size: Size
    body_truncated: bool


class FastRecord(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """The plugin's record as the fast path accepts it (see the module docstring)."""

    v: Literal[1] | UnsetType = UNSET
    ts: Seconds
    source: BatchSource
    request_id: str
    method: Annotated[str, Meta(min_length=1)]
    scheme: str
    host: str
    port: Port
    path: str
    query: str
    http_version: str
    headers: Headers
    body: bytes
    body_size: Size
    body_truncated: bool
    response: FastResponse | UnsetType = UNSET
    server_addr: str | UnsetType = UNSET
    server_port: Port | UnsetType = UNSET
    meta: MetaMap | UnsetType = UNSET


REQUIRED_FIELDS = len(FastRecord.__struct_fields__) - 5  # all but v and the four optional


class BatchShape(Struct):
    v: Literal[1]
    records: list[Raw]


_SHAPE = msgspec.msgpack.Decoder(BatchShape)
_V_FIELD = msgpack.packb("v") + msgpack.packb(RECORD_VERSION)
_ID_KEY = msgpack.packb("id")


def record_spans(body: bytes, max_records: int) -> list[Raw] | None:
    """The records of a batch that is exactly ``{"v": 1, "records": [...]}`` (a two-key map),
    each as a view of its bytes; None for anything else (``batch.unpack_batch`` then sorts it
    out and answers the precise 400 / 413)."""
    if body[:1] != b"\x82":  # two keys: no extra and no duplicate key to interpret
        return None
    try:
        records = _SHAPE.decode(body).records
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return records if len(records) <= max_records else None


def body_ok(body: bytes, size: int, truncated: bool, cap: int) -> bool:
    """What ``BatchRecordBuilder._cap_body`` would leave unchanged."""
    kept = len(body)
    return kept <= cap and size >= kept and truncated == (size > kept)


class FastRecords:
    """Built once per listener; ``pack`` runs per record."""

    def __init__(self, cfg: ReceiverConfig, realip: RealIp,
                 new_id: Callable[[], str]) -> None:
        self.max_body = cfg.max_body_bytes
        self.max_headers = cfg.max_header_count
        self.realip = realip
        self.new_id = new_id
        self._decode = msgspec.msgpack.Decoder(FastRecord).decode
        self._ips: dict[tuple[str, ...], bytes] = {}

    def pack(self, raw: Raw | bytes, tcp_peer: str) -> tuple[bytes, str] | None:
        """(v1 record packed, source), or None when the record is not canonical."""
        try:
            rec = self._decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        view = memoryview(raw)
        fields, head = map_size(view)
        if fields != self._present(rec) or not self._canonical(rec):
            return None  # a duplicate key, or something batch_record would change
        ident = self.new_id().encode()
        if len(ident) > 31:  # a ULID is 26 characters: a fixstr
            return None
        node = _ID_KEY + bytes((0xA0 | len(ident),)) + ident + self._ip_fields(rec, tcp_peer)
        extra = 4
        if rec.v is UNSET:
            node, extra = node + _V_FIELD, 5
        return b"".join((_map_header(fields + extra), view[head:], node)), rec.source

    @staticmethod
    def _present(rec: FastRecord) -> int:
        """Keys the record's map must have had, if none was sent twice."""
        return (REQUIRED_FIELDS + (rec.v is not UNSET) + (rec.response is not UNSET)
                + (rec.server_addr is not UNSET) + (rec.server_port is not UNSET)
                + (rec.meta is not UNSET))

    def _canonical(self, rec: FastRecord) -> bool:
        host, cap, response = rec.host, self.max_body, rec.response
        if host[-len(SHADOW):].lower() == SHADOW or len(rec.headers) > self.max_headers:
            return False
        if not body_ok(rec.body, rec.body_size, rec.body_truncated, cap):
            return False
        return response is UNSET or (
            len(response.headers) <= self.max_headers
            and body_ok(response.body, response.body_size, response.body_truncated, cap))

    def _ip_fields(self, rec: FastRecord, tcp_peer: str) -> bytes:
        """``client_ip``, ``peer_ip`` and ``ip_chain`` packed as map entries; cached by
        (peer, header values) as ``BatchRecordBuilder._resolve_ip`` would resolve them."""
        meta = rec.meta
        direct = meta.get("direct_remote_address") if meta is not UNSET else None
        peer = direct if type(direct) is str and direct else tcp_peer
        wanted = self.realip.header
        size = len(wanted)
        key = (peer, *[v for n, v in rec.headers if len(n) == size and n.lower() == wanted])
        packed = self._ips.get(key)
        if packed is None:
            client_ip, chain = self.realip.resolve(peer, key[1:])
            packed = msgpack.packb({"client_ip": client_ip, "peer_ip": chain[-1],
                                    "ip_chain": chain})[1:]  # without the fixmap header
            if len(self._ips) >= _IP_CACHE_MAX:
                self._ips.clear()  # SECURITY: bounded whatever the senders put in headers
            self._ips[key] = packed
        return packed


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    return b"\xde" + n.to_bytes(2, "big")  # records have ~20 keys; map 32 is never needed
