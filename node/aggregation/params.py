"""Query-parameter parsing of the API: every bad value becomes a 400 naming the parameter.

Unknown parameters are refused too (a typo such as ``clas=sqli`` would otherwise silently
return everything).
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import UTC, datetime

from multidict import MultiMapping

from node.aggregation.paging import Position, decode_cursor
from node.config import CLASSES

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_TEXT = 1024
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadParameter(Exception):
    """A query parameter (or body field) that cannot be used; ``name`` is reported."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def check_known(query: MultiMapping[str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter (allowed: {', '.join(allowed)})")
        if len(query.getall(name)) > 1:
            raise BadParameter(name, "given more than once")


def text(query: MultiMapping[str], name: str) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise BadParameter(name, f"longer than {MAX_TEXT} characters")
    return value


def limit(query: MultiMapping[str]) -> int:
    raw = query.get("limit")
    if raw in (None, ""):
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParameter("limit", f"expected an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def timestamp(query: MultiMapping[str], name: str) -> float | None:
    """Epoch seconds (``1700000000.5``) or ISO 8601 (``2026-11-21T10:00:00Z``)."""
    raw = text(query, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = _iso(name, raw)
    if not math.isfinite(value):
        raise BadParameter(name, "expected a finite time")
    return value


def _iso(name: str, raw: str) -> float:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(name, "expected epoch seconds or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def attack_class(query: MultiMapping[str]) -> str | None:
    value = text(query, "class")
    if value is not None and value not in CLASSES:
        raise BadParameter("class", f"unknown class (one of {', '.join(CLASSES)})")
    return value


def ip(query: MultiMapping[str], name: str) -> str | None:
    value = text(query, name)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadParameter(name, "expected an IPv4 or IPv6 address") from None


def cursor(query: MultiMapping[str]) -> Position | None:
    raw = text(query, "cursor")
    if raw is None:
        return None
    try:
        return decode_cursor(raw)
    except ValueError:
        raise BadParameter("cursor", "not a cursor returned by this API") from None


def choice(query: MultiMapping[str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = text(query, name) or default
    if value not in choices:
        raise BadParameter(name, f"expected one of {', '.join(choices)}")
    return value


def identifier(value: str, name: str = "id") -> str:
    if not ID_RE.fullmatch(value):
        raise BadParameter(name, "expected 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def time_range(since: float | None, until: float | None) -> tuple[float, float]:
    lo = -math.inf if since is None else since
    hi = math.inf if until is None else until
    if lo > hi:
        raise BadParameter("since", "is after until")
    return lo, hi
