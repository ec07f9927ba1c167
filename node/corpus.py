"""The labeled corpus format (one JSON request per line) and its two conversions.

Not part of the request flow: a tool for measuring it. ``oob-node replay`` turns each case
into wire bytes for a node's mirror listener (``wire_request``); ``bench/detect.py`` and the
tests turn each case into the RequestRecord the receiver would build from those bytes
(``to_record``), so offline and live measurements look at the same request.

Line fields: ``id``, ``source``, ``label`` (attack | benign), ``class``, ``method``,
``path`` (with the query, already encoded for the wire), ``headers`` ([[name, value], ...]),
``body`` + ``body_encoding`` (text | base64), ``meta``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.records import RECORD_VERSION, Hit, RequestRecord

REQUEST_ID_HEADER = "x-request-id"
# Node classes without a corpus class of their own: the corpus calls them "other".
CORPUS_CLASS = {"scanner": "other", "protocol": "other"}
# Hop-by-hop framing the replayer computes itself; a case's own value would desync the wire.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Case:
    """One labeled request."""

    id: str
    source: str
    label: str  # attack | benign
    cls: str
    method: str
    path: str  # with "?query", as on the wire
    headers: tuple[tuple[str, str], ...]
    body: bytes
    file: str  # the corpus file it came from (for per-file figures)


def read_cases(path: Path) -> Iterator[Case]:
    """Cases of one JSONL file; malformed lines are skipped (a corpus is data, not code)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            case = parse_case(line, path.name)
            if case is not None:
                yield case


def parse_case(line: str, file: str = "") -> Case | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "id" not in doc:
        return None
    return Case(id=str(doc["id"]), source=str(doc.get("source", "")),
                label=str(doc.get("label", "")), cls=str(doc.get("class", "")),
                method=str(doc.get("method") or "GET"), path=str(doc.get("path") or "/"),
                headers=tuple((str(n), str(v)) for n, v in doc.get("headers") or ()),
                body=_body(doc), file=file)


def _body(doc: dict[str, Any]) -> bytes:
    body = doc.get("body") or ""
    if doc.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body)
        except (binascii.Error, ValueError):
            return b""
    return str(body).encode("utf-8", "surrogateescape")


def headers_with_id(case: Case) -> list[tuple[str, str]]:
    """The case's headers in order with ``x-request-id`` set to the case id: replaced in
    place when the case carries one of its own (hits are joined back on it), else added."""
    headers = [(n, case.id if n.lower() == REQUEST_ID_HEADER else v) for n, v in case.headers]
    if not any(n.lower() == REQUEST_ID_HEADER for n, _ in headers):
        headers.append((REQUEST_ID_HEADER, case.id))
    return headers


def wire_request(case: Case) -> bytes:
    """HTTP/1.1 bytes for the mirror listener: request line and headers as in the case
    (odd methods and paths untouched), framing computed from the body."""
    lines = [f"{case.method} {case.path} HTTP/1.1"]
    names = set()
    for name, value in headers_with_id(case):
        if name.lower() in FRAMING_HEADERS:
            continue
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "host" not in names:
        lines.append("Host: localhost")
    lines.append(f"Content-Length: {len(case.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    # SECURITY: surrogateescape keeps whatever bytes the corpus author put in, unchanged.
    return head.encode("utf-8", "surrogateescape") + case.body


def to_record(case: Case, ts: float = 0.0) -> RequestRecord:
    """The record the receiver would enqueue for this case (client is loopback)."""
    path, _, query = case.path.partition("?")
    headers = headers_with_id(case)
    host = next((v for n, v in headers if n.lower() == "host"), "")
    return {
        "v": RECORD_VERSION, "id": case.id, "ts": ts, "source": "mirror",
        "request_id": case.id, "client_ip": "127.0.0.1", "peer_ip": "127.0.0.1",
        "ip_chain": ["127.0.0.1"], "method": case.method, "scheme": "http",
        "host": host.split(":")[0], "port": 0, "path": path, "query": query,
        "http_version": "1.1", "headers": [[n, v] for n, v in headers],
        "body": case.body, "body_size": len(case.body), "body_truncated": False,
    }


def class_scores(hits: Iterable[Hit | dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per class: (score of its strongest rule, total score with each rule counted once per
    request, as the engine counts it)."""
    best: dict[str, int] = {}
    total: dict[str, int] = {}
    seen: set[str] = set()
    for hit in hits:
        if hit["rule_id"] not in seen:
            seen.add(hit["rule_id"])
            cls, score = hit["class"], int(hit["score"])
            best[cls] = max(best.get(cls, 0), score)
            total[cls] = total.get(cls, 0) + score
    return {cls: (best[cls], total[cls]) for cls in best}


def reported_class(scores: dict[str, tuple[int, int]]) -> str | None:
    """The request's class in corpus terms: the class of its strongest (most specific) rule,
    ties broken by the class total, then alphabetically. A template injection that also
    trips generic code-execution rules is reported as ssti, not as the sum of the others."""
    if not scores:
        return None
    best = max(sorted(scores), key=lambda c: scores[c])
    return CORPUS_CLASS.get(best, best)
