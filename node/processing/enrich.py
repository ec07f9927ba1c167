"""Request-level facts added to each hit after detection, for aggregation's use.

- ``query``: the raw query string, shown in the console's request line (redacted before
  storage by aggregation);
- ``fingerprint``: a digest of method, host, URL and body, so a mirror copy and the Lua
  record of the same request pair up even without an ``x-request-id``;
- ``response_evidence``: a success marker in the response (Lua records only), which makes
  the attack's outcome ``probably_succeeded``.
Computed once per record that has hits, never for the (common) clean record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from node.detectors.evidence import response_evidence
from node.records import Hit, as_text

QUERY_MAX_CHARS = 2048


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value or "").encode("utf-8", "surrogateescape")


def request_fingerprint(record: dict[str, Any]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for part in ("method", "host", "path", "query", "body"):
        digest.update(_as_bytes(record.get(part)))
        digest.update(b"\x00")
    return digest.hexdigest()


def enrich_hits(record: dict[str, Any], hits: list[Hit]) -> list[Hit]:
    if not hits:
        return hits
    extra: dict[str, Any] = {"fingerprint": request_fingerprint(record)}
    query = record.get("query")
    if query:
        extra["query"] = as_text(query)[:QUERY_MAX_CHARS]
    response = record.get("response")
    if isinstance(response, dict):
        evidence = response_evidence(int(response.get("status") or 0),
                                     _as_bytes(response.get("body") or b""))
        if evidence:
            extra["response_evidence"] = evidence
    for hit in hits:
        hit.update(extra)  # type: ignore[typeddict-item]
    return hits
