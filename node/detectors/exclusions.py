"""Exclusions: user tuning that drops matching hits before scoring (false positives).

Last stage of detection (``engine.py`` applies them to candidate hits before the class
scores). Sources: ``detection.exclusions`` in the config (static) and the Redis hash
``keys.exclusions`` (id -> JSON) that the aggregation API writes; workers re-read the hash
when the INCR counter ``keys.exclusions_version`` changes (``exclusions_version``), so a
"mark as false positive" applies without a restart.

An exclusion matches a hit when every field it gives matches: ``class``, ``rule_id``,
``point`` (a prefix of the hit's point path), ``host``, ``path_prefix``, ``client_cidr``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from node.config import CLASSES
from node.logs import safe
from node.records import Hit

log = logging.getLogger(__name__)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MATCH_FIELDS = ("class", "rule_id", "point", "host", "path_prefix", "client_cidr")


@dataclass(frozen=True)
class Exclusion:
    id: str
    cls: str | None = None
    rule_id: str | None = None
    point: tuple[str, ...] | None = None
    host: str | None = None
    path_prefix: str | None = None
    client_cidr: IPNetwork | None = None
    comment: str = ""
    created: float = 0.0

    def matches(self, hit: Hit) -> bool:
        if self.cls is not None and hit["class"] != self.cls:
            return False
        if self.rule_id is not None and hit["rule_id"] != self.rule_id:
            return False
        if self.point is not None and tuple(hit["point"][:len(self.point)]) != self.point:
            return False
        if self.host is not None and hit["host"].lower() != self.host:
            return False
        if self.path_prefix is not None and not hit["path"].startswith(self.path_prefix):
            return False
        return self.client_cidr is None or _in_network(hit["client_ip"], self.client_cidr)


def _in_network(ip: str, net: IPNetwork) -> bool:
    try:
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False


def _opt_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string")
    return value


def parse_exclusion(raw: Mapping[str, Any]) -> Exclusion:
    """Validate an exclusion map (config or API); ValueError names the bad field."""
    if not isinstance(raw, Mapping):
        raise ValueError("exclusion: must be a mapping")
    cls = _opt_str(raw, "class")
    if cls is not None and cls not in CLASSES:
        raise ValueError(f"class: {cls!r} is not one of {', '.join(CLASSES)}")
    point = raw.get("point")
    if point is not None and (not isinstance(point, list) or not point
                              or not all(isinstance(p, str) for p in point)):
        raise ValueError("point: must be a non-empty list of strings")
    cidr = _opt_str(raw, "client_cidr")
    try:
        network = ipaddress.ip_network(cidr, strict=False) if cidr else None
    except ValueError:
        raise ValueError(f"client_cidr: {cidr!r} is not a CIDR") from None
    if not any(raw.get(f) is not None for f in MATCH_FIELDS):
        raise ValueError(f"exclusion: needs at least one of {', '.join(MATCH_FIELDS)}")
    created = raw.get("created", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise ValueError("created: must be a number (epoch seconds)")
    host = _opt_str(raw, "host")
    return Exclusion(id=str(raw.get("id") or ""), cls=cls, rule_id=_opt_str(raw, "rule_id"),
                     point=tuple(point) if point else None, host=host.lower() if host else None,
                     path_prefix=_opt_str(raw, "path_prefix"), client_cidr=network,
                     comment=str(raw.get("comment") or ""), created=float(created))


class ExclusionSet:
    """A fixed set of exclusions; ``matches`` is true when any one matches the hit."""

    def __init__(self, exclusions: Iterable[Exclusion] = ()) -> None:
        self.exclusions: tuple[Exclusion, ...] = tuple(exclusions)

    def __bool__(self) -> bool:
        return bool(self.exclusions)

    def __len__(self) -> int:
        return len(self.exclusions)

    def matches(self, hit: Hit) -> bool:
        return any(e.matches(hit) for e in self.exclusions)


async def exclusions_version(redis: Any, keys: Any) -> int:
    """The cheap per-batch check: the INCR counter bumped on every change (0 when unset)."""
    raw = await redis.get(keys.exclusions_version)
    return int(raw or 0)


async def load_exclusions(redis: Any, keys: Any,
                          static: Iterable[Mapping[str, Any]] = ()) -> ExclusionSet:
    """Static exclusions plus every valid one of the Redis hash (a bad entry is logged and
    skipped, never fatal)."""
    items = [parse_exclusion(e) for e in static]
    raw = await redis.hgetall(keys.exclusions)
    for ex_id, blob in sorted(raw.items()):
        try:
            items.append(parse_exclusion(orjson.loads(blob)))
        except (ValueError, orjson.JSONDecodeError) as exc:
            log.warning("skipping exclusion %s: %s", safe(ex_id), safe(str(exc)))  # SECURITY
    return ExclusionSet(items)
