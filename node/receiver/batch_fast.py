"""Fast path of ``POST /v1/batch``: msgspec decodes and validates a canonical record in C.

Where it sits: ``batch.py`` splits a batch into the byte spans of its records
(``record_spans``) and offers them, a slice at a time, to ``FastRecords.pack_many``. A record
it declines (source ``None``) takes the per-record Python path (``batch_record``), which is
also the only one that writes error messages. So this path only has to accept a subset of what
``batch_record`` accepts, and give the same record for it. Canonical here means what the Lua
plugin writes:

- every field the plugin always writes is present, text as msgpack str (valid UTF-8), no nil,
  no unknown or node-assigned field (``v: 1`` is allowed); a response has its five fields;
- bodies within ``max_body_bytes`` with a consistent ``body_size`` / ``body_truncated``,
  header lists within ``max_header_count``, a host without ``-shadow``, meta values of at most
  ``MAX_META_VALUE`` characters.

Such a record is queued as its original bytes plus the node's fields (``id``, ``client_ip``,
``peer_ip``, ``ip_chain``, and ``v`` when absent): nothing is packed again, and the only
Python work per record is a few checks, the id and a cached real-IP answer. A key sent twice
at the top level sends the record to the Python path (which packs it again); inside
``response`` or ``meta`` it is kept as sent: msgspec checked every occurrence, and msgpack
decoders keep the last one, as msgspec did.

SECURITY: msgspec decodes into fixed types only (no ext types, string keys, lengths bounded
by the types or by the bytes actually present: a header claiming 2**32 items allocates
nothing), so the fast path takes no more than the explicit unpack limits of the Python path.
"""

import sys
from collections.abc import Sequence
from typing import Annotated, Literal

import msgpack
import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from node.config import ReceiverConfig
from node.receiver.batch_record import BATCH_SOURCES, MAX_META_KEYS, MAX_META_VALUE, SHADOW
from node.receiver.realip import RealIp
from node.records import RECORD_VERSION

# No ``from __future__ import annotations`` here: msgspec reads these types at run time,
# and the record type is built per configuration (header and body limits) in record_type().
Port = Annotated[int, Meta(ge=0, le=65535)]
Size = Annotated[int, Meta(ge=0, le=2**53)]
Seconds = Annotated[float, Meta(ge=0, le=sys.float_info.max)]  # finite, not negative
MetaValue = Annotated[str, Meta(max_length=MAX_META_VALUE)] | int | float | bool | None
MetaMap = Annotated[dict[str, MetaValue], Meta(max_length=MAX_META_KEYS)]
BatchSource = Literal[tuple(sorted(BATCH_SOURCES))]  # type: ignore[valid-type]

_IP_CACHE_MAX = 4096  # (peer, header values) answers kept; proxies and clients repeat
PIECES = 6  # pieces per record in FastRecords.pack_many's answer
_DECLINED = (b"",) * PIECES
_SHADOW_AT = -len(SHADOW)
_SHADOW_DASH = slice(_SHADOW_AT, _SHADOW_AT + 1)  # where the "-" of "-shadow" would be


def record_type(max_headers: int, max_body: int) -> type[Struct]:
    """The plugin's record as the fast path accepts it (see the module docstring)."""
    headers = Annotated[list[tuple[str, str]], Meta(max_length=max_headers)]
    body = Annotated[bytes, Meta(max_length=max_body)]
    struct = {"forbid_unknown_fields": True, "gc": False}
    response = msgspec.defstruct("FastResponse", [
        ("status", Annotated[int, Meta(ge=0, le=999)]), ("headers", headers), ("body", body),
        ("body_size", Size), ("body_truncated", bool)], **struct)
    return msgspec.defstruct("FastRecord", [
        ("ts", Seconds), ("source", BatchSource), ("request_id", str),
        ("method", Annotated[str, Meta(min_length=1)]), ("scheme", str), ("host", str),
        ("port", Port), ("path", str), ("query", str), ("http_version", str),
        ("headers", headers), ("body", body), ("body_size", Size), ("body_truncated", bool),
        ("v", Literal[1] | UnsetType, UNSET), ("response", response | UnsetType, UNSET),
        ("server_addr", str | UnsetType, UNSET), ("server_port", Port | UnsetType, UNSET),
        ("meta", MetaMap | UnsetType, UNSET)], kw_only=True, **struct)


REQUIRED_FIELDS = 14  # the fields record_type() has without a default
_FIXMAP_REQUIRED = 0x80 + REQUIRED_FIELDS + 1  # keys of a plugin record with v, plus 0x80


class BatchShape(Struct):
    v: Literal[1]
    records: list[Raw]


_SHAPE = msgspec.msgpack.Decoder(BatchShape)
_V_FIELD = msgpack.packb("v") + msgpack.packb(RECORD_VERSION)
_ID_PREFIX = msgpack.packb("id") + b"\xba"  # the key, then the header of a 26-character str
# msgpack map headers by size: fixmap below 16 keys, map 16 above (a record has < 32 keys).
_MAP_HEADERS = [bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big")
                for n in range(32)]


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


class FastRecords:
    """Built once per listener; ``pack_many`` runs per slice of a batch."""

    def __init__(self, cfg: ReceiverConfig, realip: RealIp) -> None:
        self.realip = realip
        record = record_type(cfg.max_header_count, cfg.max_body_bytes)
        self._decode = msgspec.msgpack.Decoder(record).decode
        self._ips: dict[tuple[str, ...], bytes] = {}

    def pack_many(self, spans: Sequence[Raw | bytes], tcp_peer: str,
                  idents: Sequence[str]) -> tuple[list[bytes | memoryview], list[str | None]]:
        """(pieces, sources): ``PIECES`` pieces per span, which joined are the v1 record (its
        original bytes plus the node's fields), and its source; for a record that is not
        canonical, empty pieces and None. ``idents[i]`` (a ULID: 26 characters) names
        ``spans[i]``.

        One loop, no call per record, few attribute reads: these Python steps cost about as
        much as the msgspec decode (bench/ingest.py). Each record is decoded alone: one C
        call for a whole slice measured no better (its thousands of objects alive at once
        leave the CPU caches)."""
        decode, ips, wanted = self._decode, self._ips, self.realip.header  # lowercase
        size_wanted = len(wanted)
        pieces: list[bytes | memoryview] = []
        sources: list[str | None] = []
        for raw, ident in zip(spans, idents, strict=True):
            try:
                rec = decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                pieces += _DECLINED
                sources.append(None)
                continue
            view = memoryview(raw)
            keys, head = view[0], 1
            if keys == 0xDE:  # map 16, else a fixmap (a map 32 never has the count below)
                keys, head = 0x80 + ((view[1] << 8) | view[2]), 3  # +: 0x80 | 145 == 0x80 + 17
            absent, size, kept = rec.v is UNSET, rec.body_size, len(rec.body)
            response, meta, host = rec.response, rec.meta, rec.host
            response_ok = True
            if response is not UNSET:  # its body sizes, checked as the request's below
                response_size, response_kept = response.body_size, len(response.body)
                response_ok = response_size >= response_kept and \
                    response.body_truncated is (response_size > response_kept)
            # Not canonical: a key sent twice (the map has more keys than fields were set),
            # or something batch_record would change (shadow host, inconsistent body sizes).
            if (keys != _FIXMAP_REQUIRED - absent + (response is not UNSET)
                    + (rec.server_addr is not UNSET) + (rec.server_port is not UNSET)
                    + (meta is not UNSET)
                    or size < kept or rec.body_truncated is not (size > kept)
                    or (host[_SHADOW_DASH] == "-"  # skips most lower() calls
                        and host[_SHADOW_AT:].lower() == SHADOW)
                    or not response_ok):
                pieces += _DECLINED
                sources.append(None)
                continue
            # The real-IP answer, cached by (peer, header values) as
            # BatchRecordBuilder._resolve_ip would resolve them.
            direct = meta.get("direct_remote_address") if meta is not UNSET else None
            key: tuple[str, ...] = (direct if type(direct) is str and direct else tcp_peer,)
            for name, value in rec.headers:
                if len(name) == size_wanted and name.lower() == wanted:
                    key += (value,)
            ip_fields = ips.get(key) or self._ip_fields(key)
            pieces += (_MAP_HEADERS[keys - 0x7C + absent], view[head:], _ID_PREFIX,
                       ident.encode(), ip_fields, _V_FIELD if absent else b"")
            sources.append(rec.source)
        return pieces, sources

    def _ip_fields(self, key: tuple[str, ...]) -> bytes:
        """``client_ip``, ``peer_ip`` and ``ip_chain`` packed as map entries, for ``key`` =
        (peer, values of the real-IP header...); remembered."""
        client_ip, chain = self.realip.resolve(key[0], key[1:])
        packed: bytes = msgpack.packb({"client_ip": client_ip, "peer_ip": chain[-1],
                                       "ip_chain": chain})[1:]  # without the fixmap header
        if len(self._ips) >= _IP_CACHE_MAX:
            self._ips.clear()  # SECURITY: bounded whatever the senders put in headers
        self._ips[key] = packed
        return packed
