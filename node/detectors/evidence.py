"""Success markers in a response: did the attempt probably work?

Run by processing on a record's response (the Lua plugin's records carry one; mirror copies
never do); the label goes into the hit's optional ``response_evidence`` field, which
aggregation turns into the attack's outcome (node/aggregation/outcome.py).

The markers are content an application does not serve by accident: the first line of
``/etc/passwd``, database driver error messages, ``id`` command output.
"""

from __future__ import annotations

import re

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
