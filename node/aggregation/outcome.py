"""Did an attack attempt probably work? Evidence from the response, when one is known.

Two halves of one idea, kept together so the knowledge lives in one place:
- ``response_evidence(status, body)``: run by processing on a record's response (the Lua
  plugin's records carry one; mirror copies never do) and put in the hit's optional
  ``response_evidence`` field: a short label such as ``passwd_file`` or ``sql_error``.
- ``hit_outcome(hit)``: run by aggregation on each hit: evidence -> ``probably_succeeded``;
  a 4xx answer (refused, not found, blocked by something in front) -> ``failed``; no response
  or an inconclusive one -> ``unknown``.

The markers are content that an application does not serve by accident: the first line of
``/etc/passwd``, database driver error messages, ``id`` command output. A generic page or a
bare status 200 is never taken as success.
"""

from __future__ import annotations

import re

from node.records import Hit

OUTCOMES = ("unknown", "failed", "probably_succeeded")
EVIDENCE_SCAN_BYTES = 65536  # only the head of a body is searched (bounded work per record)

# label -> pattern over the raw response body (bytes). Ordered: the first match names it.
EVIDENCE_PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("passwd_file", re.compile(rb"root:[x*!]?:0:0:")),
    ("win_ini", re.compile(rb"\[(?:fonts|extensions|boot loader)\]\r?\n", re.I)),
    ("command_output", re.compile(rb"uid=\d+\([\w.-]+\) gid=\d+\(")),
    ("sql_error", re.compile(
        rb"you have an error in your sql syntax|SQLSTATE\[|\bORA-\d{5}\b|PG::SyntaxError"
        rb"|unterminated quoted string|quoted string not properly terminated"
        rb"|syntax error at or near|sqlite3?\.OperationalError|SQLite3::SQLException"
        rb"|Unclosed quotation mark after the character string|near \".*?\": syntax error"
        rb"|Microsoft OLE DB Provider for SQL Server|java\.sql\.SQLSyntaxErrorException",
        re.I)),
    ("template_error", re.compile(rb"jinja2\.exceptions\.|freemarker\.core\.|"
                                  rb"org\.thymeleaf\.exceptions", re.I)),
)


def response_evidence(status: int, body: bytes) -> str:
    """The label of the first success marker in a response body, "" when none (or no answer)."""
    if not status or not body:
        return ""
    head = body[:EVIDENCE_SCAN_BYTES]
    for label, pattern in EVIDENCE_PATTERNS:
        if pattern.search(head):
            return label
    return ""


def hit_verdict(hit: Hit) -> str:
    """What one hit's response says: ``probably_succeeded``, ``failed`` (4xx),
    ``inconclusive`` (answered, no marker) or ``no_response`` (mirror copy: status 0)."""
    if hit.get("response_evidence"):
        return "probably_succeeded"
    status = int(hit.get("response_status") or 0)
    if not status:
        return "no_response"
    return "failed" if 400 <= status < 500 else "inconclusive"


def public_outcome(verdict: str) -> str:
    """The verdict as shown for a hit: one of OUTCOMES."""
    return verdict if verdict in ("probably_succeeded", "failed") else "unknown"


def attack_outcome(verdicts: dict[str, int]) -> str:
    """An attack's outcome from its hits' verdict counts: any success wins; ``failed`` only
    when every answered hit was refused; otherwise ``unknown``."""
    if verdicts.get("probably_succeeded"):
        return "probably_succeeded"
    if verdicts.get("failed") and not verdicts.get("inconclusive"):
        return "failed"
    return "unknown"
