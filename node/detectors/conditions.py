"""Request conditions: facts about the whole request a rule can be silenced by.

A rule's patterns look at one value; a few attacks are only attacks in context. A rule names
its condition (``unless: same_site_referer``) and the engine drops the rule's candidates when
the condition holds for the request, before scoring. ``CONDITIONS`` is the one visible table,
like ``confirm.CONFIRMERS``. A condition reads only the record, never the network or clock.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from node.records import RequestRecord, as_text

Condition = Callable[[RequestRecord], bool]


def same_site_referer(record: RequestRecord) -> bool:
    """The request was reached from a page of its own host: its Referer's host is the Host
    or a sub-domain of it (OWASP CRS 943110/943120: a session id passed in the URL is the
    start of a session fixation when it arrives from elsewhere or with no Referer at all)."""
    host = _hostname(as_text(record.get("host", "")))
    referer = _header(record, "referer")
    if not host or not referer:
        return False
    try:
        ref_host = (urlsplit(referer.strip()).hostname or "").rstrip(".")
    except ValueError:  # SECURITY: a malformed Referer (bad port, brackets) is no same site
        return False
    return ref_host == host or ref_host.endswith("." + host)


def _hostname(host: str) -> str:
    """The Host header's name without port, lowercased (``[v6]:port`` kept in brackets)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):
        return host.split("]", 1)[0].strip("[")
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _header(record: RequestRecord, name: str) -> str:
    for n, v in record.get("headers") or ():
        if as_text(n).lower() == name:
            return as_text(v)
    return ""


CONDITIONS: dict[str, Condition] = {
    "same_site_referer": same_site_referer,
}
