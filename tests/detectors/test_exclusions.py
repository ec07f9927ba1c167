"""Exclusions: parsing (errors name the field), matching on each field, and loading from
the real Redis hash the API writes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from node.detectors.exclusions import (
    ExclusionSet,
    exclusions_version,
    load_exclusions,
    parse_exclusion,
)
from node.queue.keys import Keys
from node.records import Hit

HIT: Hit = {"id": "h", "record_id": "r", "request_id": "", "ts": 0.0, "client_ip": "10.1.2.3",
            "host": "Shop.example", "application": "shop", "method": "GET",
            "path": "/admin/users", "class": "sqli", "rule_id": "sqli-union", "severity": "high",
            "score": 5, "point": ["query", "q"], "fragment": "x", "source": "mirror",
            "response_status": 0}

MATCHING = [
    {"class": "sqli"}, {"rule_id": "sqli-union"}, {"point": ["query"]},
    {"point": ["query", "q"]}, {"host": "shop.example"}, {"path_prefix": "/admin"},
    {"client_cidr": "10.0.0.0/8"}, {"client_cidr": "10.1.2.3"},
    {"class": "sqli", "path_prefix": "/admin", "client_cidr": "10.1.0.0/16"},
]
NOT_MATCHING = [
    {"class": "xss"}, {"rule_id": "sqli-other"}, {"point": ["query", "q", "deeper"]},
    {"point": ["header"]}, {"host": "other.example"}, {"path_prefix": "/api"},
    {"client_cidr": "192.168.0.0/16"}, {"client_cidr": "2001:db8::/32"},
    {"class": "sqli", "path_prefix": "/api"},  # all given fields must match
]


@pytest.mark.parametrize("raw", MATCHING, ids=[str(m) for m in MATCHING])
def test_matches(raw: dict[str, Any]) -> None:
    assert ExclusionSet([parse_exclusion({"id": "e", **raw})]).matches(HIT)


@pytest.mark.parametrize("raw", NOT_MATCHING, ids=[str(m) for m in NOT_MATCHING])
def test_does_not_match(raw: dict[str, Any]) -> None:
    assert not ExclusionSet([parse_exclusion({"id": "e", **raw})]).matches(HIT)


BAD = [
    ({"class": "nope"}, "class"), ({"point": "query"}, "point"), ({"point": []}, "point"),
    ({"client_cidr": "10.0.0.0/33"}, "client_cidr"), ({"host": ""}, "host"),
    ({"rule_id": 5}, "rule_id"), ({"comment": "only a comment"}, "exclusion"),
    ({"class": "sqli", "created": "yesterday"}, "created"),
]


@pytest.mark.parametrize("raw,field", BAD, ids=[f for _, f in BAD])
def test_parse_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        parse_exclusion(raw)


async def test_load_from_redis(redis: Any, prefix: str) -> None:
    keys = Keys(prefix)
    assert await exclusions_version(redis, keys) == 0
    await redis.hset(keys.exclusions, mapping={
        "e1": orjson.dumps({"id": "e1", "rule_id": "sqli-union", "comment": "fp"}),
        "bad": b"{not json",
        "e2": orjson.dumps({"id": "e2", "class": "nope"}),
    })
    await redis.incr(keys.exclusions_version)
    loaded = await load_exclusions(redis, keys, [{"class": "xss"}])
    assert await exclusions_version(redis, keys) == 1
    assert len(loaded) == 2 and loaded.matches(HIT)
    assert [e.id for e in loaded.exclusions] == ["", "e1"]
