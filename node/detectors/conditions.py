"""Request conditions: facts about the whole request a rule can be silenced by.

A rule's patterns look at one value; a few attacks are only attacks in context. A rule names
its condition (``unless: same_site_referer``, ``when: lookalike_host``) and the engine drops
the rule's candidates when an ``unless`` condition holds, or a ``when`` one does not, before
scoring. A condition sees the request and the matched point's value (as extracted).
``CONDITIONS`` is the one visible table, like ``confirm.CONFIRMERS``. A condition reads only
the record, never the network or clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from node.records import RequestRecord, as_text

Condition = Callable[[RequestRecord, str], bool]  # (request, matched point's value)


def same_site_referer(record: RequestRecord, _value: str) -> bool:
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
    return _same_site(ref_host, host)


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


# Second-level labels under which a site is three labels long (app.example.co.uk).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go"})
# Buckets named after a domain are the legitimate case of a domain inside another host.
_HOSTED = re.compile(r"(?:s3[.-][\w.-]*amazonaws\.com|storage\.googleapis\.com"
                     r"|blob\.core\.windows\.net)$")
_SCHEME = re.compile(r"[a-z][a-z0-9+-]{0,15}:(?!\d)")  # not a bare host's "evil.net:8080"
_AUTHORITY_END = re.compile(r"[/?#\\\s]")


def lookalike_host(record: RequestRecord, value: str) -> bool:
    """The value points at another site dressed as this one: the request's host, or its
    site (``example.com`` of ``app.example.com``), used as a sub-domain of another domain
    (``app.example.com.evil.net``) or as the user-info before another host
    (``app.example.com@evil.net``), the shapes that pass a "starts with our host" check in
    a redirect or fetch target (OWASP's open redirect and SSRF cheat sheets)."""
    host = _hostname(as_text(record.get("host", "")))
    if "." not in host or host.replace(".", "").isdigit():
        return False  # no site to imitate: localhost, an IP address
    site = _site(host)
    authority = _authority(value)
    userinfo, at, target = authority.rpartition("@")
    target = target.rsplit(":", 1)[0].strip(".")
    if not target or _same_site(target, site) or _HOSTED.search(target):
        return False
    if at and (host in userinfo or site in userinfo):
        return True
    dotted = "." + target
    return any(target.startswith(name + ".") or "." + name + "." in dotted
               for name in (host, site))


def _authority(value: str) -> str:
    """The authority of a URL, or of a bare ``host/path`` value, lowercased."""
    text = value.strip().lower()
    scheme = _SCHEME.match(text)
    if scheme is not None:
        text = text[scheme.end():]
    text = text.lstrip("/\\")
    end = _AUTHORITY_END.search(text)
    return text[:end.start()] if end else text


def _site(host: str) -> str:
    labels = host.split(".")
    size = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL \
        else 2
    return ".".join(labels[-size:])


def _same_site(target: str, site: str) -> bool:
    """``target`` is ``site`` or one of its sub-domains."""
    return target == site or target.endswith("." + site)


CONDITIONS: dict[str, Condition] = {
    "same_site_referer": same_site_referer,
    "lookalike_host": lookalike_host,
}
