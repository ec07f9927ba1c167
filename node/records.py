"""The records that flow through the node: request records, hits and attacks.

This module is the single definition of the field names shared by the receiver, the Lua
plugin, processing and aggregation (see README "Wire formats"). Everything downstream of
the receiver reads these shapes; nothing else defines field names.

Text fields (path, query, header names and values, host) are ``str`` when the bytes on the
wire were valid UTF-8 and ``bytes`` (msgpack bin) when they were not, so the exact bytes an
attacker sent survive the queue.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, NotRequired, TypedDict

RECORD_VERSION = 1

Source = Literal["mirror", "lua", "ext_proc", "har"]
SOURCES: tuple[str, ...] = ("mirror", "lua", "ext_proc", "har")

Text = str | bytes
HeaderList = list[list[Text]]  # [[name, value], ...] in wire order, duplicates kept


class ResponseRecord(TypedDict):
    status: int  # 0 when unknown
    headers: HeaderList
    body: bytes
    body_size: int
    body_truncated: bool


class RequestRecord(TypedDict):
    """Record format v1: one msgpack map per request."""

    v: int
    id: str  # ULID assigned by the receiver
    ts: float
    source: str  # one of SOURCES
    request_id: str  # x-request-id, "" when absent
    client_ip: str  # resolved real client address
    peer_ip: str  # TCP peer that delivered the request
    ip_chain: list[str]  # the forwarding chain as read (header entries, then the peer)
    method: Text
    scheme: str
    host: Text  # without Envoy's "-shadow" suffix
    port: int  # 0 when unknown
    path: Text  # without the query string
    query: Text  # raw query string without "?", "" when absent
    http_version: str
    headers: HeaderList
    body: bytes
    body_size: int  # original size before the cap
    body_truncated: bool
    response: NotRequired[ResponseRecord]
    server_addr: NotRequired[str]
    server_port: NotRequired[int]
    meta: NotRequired[dict[str, Any]]


# "class" is a keyword, hence the functional syntax.
Hit = TypedDict(
    "Hit",
    {
        "id": str,  # hit_id(record_id, rule_id, point): idempotency key
        "record_id": str,
        "request_id": str,
        "ts": float,
        "client_ip": str,
        "host": str,
        "application": str,
        "method": str,
        "path": str,
        "class": str,
        "rule_id": str,
        "severity": str,
        "score": int,
        "point": list[str],
        "fragment": str,  # capped; attacker-controlled: escape wherever shown
        "source": str,
        "response_status": int,  # 0 when unknown
    },
)

HIT_FIELDS: tuple[str, ...] = tuple(Hit.__annotations__)

# Optional hit fields aggregation reads when present (outside Hit so HIT_FIELDS stays exact):
# "response_evidence": label from node.detectors.evidence.response_evidence(status, body),
#   marks the attempt as probably succeeded; "fingerprint": digest of method, URL and body,
#   pairs a mirror copy with its Lua record when there is no x-request-id; "query": the raw
#   query string, shown in the console's request line (redacted before storage).
HIT_OPTIONAL_FIELDS: tuple[str, ...] = ("response_evidence", "fingerprint", "query")

FRAGMENT_MAX_CHARS = 256

ATTACK_STATUS = "monitored"  # this node never blocks

Attack = TypedDict(
    "Attack",
    {
        "id": str,
        "class": str,
        "client_ip": str,
        "host": str,
        "application": str,
        "first_seen": float,
        "last_seen": float,
        "hits": int,
        "paths": list[list[Any]],  # [[path, count], ...] top N
        "points": list[list[Any]],  # [[point-as-string, count], ...] top N
        "rule_ids": list[str],
        "sources": list[str],
        "sample_hits": list[Hit],
        "status": str,
        "outcome": str,  # "unknown" | "failed" | "probably_succeeded"
    },
)


def as_text(value: Text) -> str:
    """Show a wire text field as str; invalid UTF-8 becomes U+FFFD (for display and hits)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def record_label(record: object) -> str:
    """A record's id for a log line, whatever the record holds: takes ``object`` because
    the compiled engine checks every typed value it reads, and a malformed record's id may
    be of any type (repr: attacker text escaped)."""
    ident = record.get("id", "?") if isinstance(record, dict) else "?"
    return repr(ident)[:80]


def hit_id(record_id: str, rule_id: str, point: list[str]) -> str:
    """Stable idempotency key of a hit: the same record, rule and point give the same id."""
    key = "\x1f".join([record_id, rule_id, *point]).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=12).hexdigest()
