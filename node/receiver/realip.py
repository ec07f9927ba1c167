"""Real client address: nginx ``realip`` semantics, applied to every record the receiver builds.

Where it sits: the mirror listener and the batch listener call ``RealIp.resolve`` once per
record, before the record is queued; the result is the record's ``client_ip`` and ``ip_chain``.

Semantics (what nginx users know from ``set_real_ip_from`` / ``real_ip_header`` /
``real_ip_recursive``):

- The header is read only when the TCP peer is in ``trusted_proxies``.
- X-Forwarded-For, X-Real-IP and any other header name: a comma-separated list; several header
  lines are joined in order. ``Forwarded`` (RFC 7239): the ``for=`` parameter of each element.
- Not recursive: the last entry is the client. Recursive: walk from the right skipping trusted
  entries; the first untrusted one is the client; when every entry is trusted, the leftmost.
- Entries may carry ports (``1.2.3.4:80``, ``[2001:db8::1]:443``), quotes, spaces. Anything that
  is not an address (``unknown``, ``_hidden``, junk) stops the walk: the last good address is
  used, or the peer when there is none.

The chain (every header entry as read, then the peer) is kept in the record whatever the
trust decision, so an analyst can see what a client claimed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds: an attacker controls the header, so the work per record must be bounded.
MAX_CHAIN = 64  # entries kept and walked; nginx has no cap, a hostile header is unbounded
MAX_ENTRY_CHARS = 80  # longer than any address with port and brackets
_CACHE_MAX = 4096  # parsed entries remembered (proxy addresses repeat on every request)


def parse_address(entry: str) -> IPAddress | None:
    """An address from one entry (port, brackets, quotes allowed), or None for garbage."""
    text = entry.strip().strip('"').strip()
    if not text or len(text) > MAX_ENTRY_CHARS:
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not _is_port(rest)):
            return None
        text = host
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def _is_port(text: str) -> bool:
    port = text[1:]
    return text[:1] == ":" and port.isascii() and port.isdigit() and int(port) <= 65535


def split_list(values: Iterable[str]) -> list[str]:
    """Entries of X-Forwarded-For-like header lines, in order, empty entries skipped."""
    out: list[str] = []
    for value in values:
        out.extend(e for e in (part.strip() for part in value.split(",")) if e)
    return out


def split_forwarded(values: Iterable[str]) -> list[str]:
    """The ``for=`` value of each RFC 7239 element; an element without one is kept raw
    (it is not an address, so it stops the walk like any garbage)."""
    out: list[str] = []
    for value in values:
        for element in value.split(","):
            element = element.strip()
            if element:
                out.append(_forwarded_for(element))
    return out


def _forwarded_for(element: str) -> str:
    for pair in element.split(";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip().lower() == "for":
            return val.strip()
    return element


class RealIp:
    """Resolver built once from the receiver config; ``resolve`` is on the hot path."""

    def __init__(self, trusted_proxies: Sequence[str], header: str, recursive: bool) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in trusted_proxies)
        self.header = header.lower()  # callers match header names lowercased
        self.recursive = recursive
        self._split = split_forwarded if self.header == "forwarded" else split_list
        self._cache: dict[str, tuple[str | None, bool]] = {}

    def lookup(self, entry: str) -> tuple[str | None, bool]:
        """(normalized address or None, trusted?) of one entry, cached."""
        hit = self._cache.get(entry)
        if hit is not None:
            return hit
        addr = parse_address(entry)
        result = (None, False) if addr is None else (str(addr), self._trusted(addr))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()  # SECURITY: bounded; random junk entries cannot grow it
        self._cache[entry] = result
        return result

    def _trusted(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self.networks)

    def resolve(self, peer: str, values: Sequence[str]) -> tuple[str, list[str]]:
        """(client_ip, chain) for a request from ``peer`` carrying the header ``values``."""
        peer_ip, peer_trusted = self.lookup(peer)
        peer_ip = peer_ip or peer
        if not values:
            return peer_ip, [peer_ip]
        if len(values) == 1 and "," not in values[0] and self.header != "forwarded":
            entries = [values[0].strip()] if values[0].strip() else []  # the common case
        else:
            entries = self._split(values)[-MAX_CHAIN:]
        chain = [e[:MAX_ENTRY_CHARS] for e in entries]
        chain.append(peer_ip)
        # SECURITY: an untrusted peer's header is attacker text; never believed.
        if not peer_trusted or not entries:
            return peer_ip, chain
        return self._walk(entries) or peer_ip, chain

    def _walk(self, entries: list[str]) -> str | None:
        last_good: str | None = None
        for entry in reversed(entries):
            addr, trusted = self.lookup(entry)
            if addr is None:
                return last_good  # garbage stops the walk
            if not self.recursive or not trusted:
                return addr
            last_good = addr
        return last_good  # every entry trusted: the leftmost
