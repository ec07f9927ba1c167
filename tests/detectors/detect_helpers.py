"""Builders shared by the detection tests (imported as a plain module: tests/ has no
packages; ``conftest.py`` puts this directory on sys.path)."""

from __future__ import annotations

from typing import Any

from node.records import RequestRecord


def rule(rid: str, patterns: list[str], **extra: Any) -> dict[str, Any]:
    """A minimal valid rule mapping for test packs."""
    base: dict[str, Any] = {"id": rid, "name": rid, "severity": "high", "score": 5,
                            "patterns": patterns,
                            "examples": {"match": extra.pop("match", ["x"])}}
    base.update(extra)
    return base


def record(**fields: Any) -> RequestRecord:
    """A request record with every field, overridden by ``fields``."""
    base: dict[str, Any] = {"v": 1, "id": "r1", "ts": 0.0, "source": "mirror",
                            "request_id": "", "client_ip": "10.0.0.1", "peer_ip": "10.0.0.1",
                            "ip_chain": [], "method": "GET", "scheme": "http", "host": "h",
                            "port": 80, "path": "/", "query": "", "http_version": "1.1",
                            "headers": [], "body": b"", "body_size": 0,
                            "body_truncated": False}
    base.update(fields)
    return base  # type: ignore[return-value]
