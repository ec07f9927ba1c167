"""Hit enrichment: query, fingerprint and response evidence, computed from the record."""

from __future__ import annotations

import gzip

import brotli
import pytest

from node.processing.enrich import enrich_hits, request_fingerprint

PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"


def record(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"method": "GET", "host": "shop", "path": "/a", "query": "id=1",
                               "body": b""}
    base.update(fields)
    return base


def test_clean_records_are_not_touched() -> None:
    assert enrich_hits(record(), []) == []


def test_fingerprint_is_the_same_for_the_same_request_and_differs_otherwise() -> None:
    assert request_fingerprint(record()) == request_fingerprint(record())
    for change in ({"method": "POST"}, {"host": "other"}, {"path": "/b"}, {"query": "id=2"},
                   {"body": b"x"}):
        assert request_fingerprint(record(**change)) != request_fingerprint(record())
    # invalid UTF-8 kept as bytes fingerprints like its exact wire bytes
    assert request_fingerprint(record(path=b"/\xff")) != request_fingerprint(record(path="/"))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"status": 200, "body": b"root:x:0:0:root:/root:/bin/bash\n"}, "passwd_file"),
        ({"status": 500, "body": b"You have an error in your SQL syntax near ''"}, "sql_error"),
        ({"status": 200, "body": b"<html>welcome</html>"}, None),
        ({"status": 404, "body": b""}, None),
        (None, None),
        # compressed answers (what a client sending Accept-Encoding gets) are inflated first
        ({"status": 200, "body": gzip.compress(PASSWD),
          "headers": [["Content-Type", "text/plain"], ["Content-Encoding", "gzip"]]},
         "passwd_file"),
        ({"status": 200, "body": brotli.compress(PASSWD),
          "headers": [["content-encoding", "br"]]}, "passwd_file"),
        ({"status": 200, "body": brotli.compress(PASSWD)}, None),  # no coding said: as sent
        ({"status": 200, "body": PASSWD, "headers": [["Content-Encoding", "gzip"]]},
         "passwd_file"),  # a lying header changes nothing
    ],
)
def test_response_evidence(response: dict[str, object] | None, expected: str | None) -> None:
    rec = record(response=response) if response is not None else record()
    hits = enrich_hits(rec, [{"rule_id": "r"}])  # type: ignore[list-item]
    assert hits[0].get("response_evidence") == expected
    assert hits[0]["query"] == "id=1"
    assert hits[0]["fingerprint"] == request_fingerprint(rec)
