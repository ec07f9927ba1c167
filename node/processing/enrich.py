"""Request-level facts added to each hit after detection, for aggregation's use.

- ``query``: the raw query string, shown in the console's request line (redacted before
  storage by aggregation);
- ``fingerprint``: a digest of method, host, URL and body, so a mirror copy and the Lua
  record of the same request pair up even without an ``x-request-id``;
- ``response_evidence``: a success marker in the response (Lua records only; a gzip, deflate
  or br answer is inflated first), which makes the attack's outcome ``probably_succeeded``.
Computed once per record that has hits, never for the (common) clean record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from node.detectors.evidence import EVIDENCE_SCAN_BYTES, response_evidence
from node.detectors.inflate import inflate
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


def _response_body(response: dict[str, Any]) -> bytes:
    """The captured response body as the client read it (compressed answers inflated: the
    markers are searched in the head, ``EVIDENCE_SCAN_BYTES`` at most)."""
    body = _as_bytes(response.get("body") or b"")
    headers = response.get("headers")
    coding = next((as_text(v) for n, v in headers if as_text(n).lower() == "content-encoding"),
                  "") if isinstance(headers, list) else ""
    return inflate(body, coding, EVIDENCE_SCAN_BYTES) if coding else body


def enrich_hits(record: dict[str, Any], hits: list[Hit]) -> list[Hit]:
    if not hits:
        return hits
    extra: dict[str, Any] = {"fingerprint": request_fingerprint(record)}
    query = record.get("query")
    if query:
        extra["query"] = as_text(query)[:QUERY_MAX_CHARS]
    response = record.get("response")
    if isinstance(response, dict):
        evidence = response_evidence(int(response.get("status") or 0), _response_body(response))
        if evidence:
            extra["response_evidence"] = evidence
    for hit in hits:
        hit.update(extra)  # type: ignore[typeddict-item]
    return hits
