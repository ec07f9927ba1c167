"""The HTTP API under /api/v1 (DESIGN.md "HTTP API"): attacks, hits, stats, timeline,
exclusions. Export lives in export.py; auth, headers and errors in app.py.

Every list is newest first with an opaque keyset cursor: ``{"items": [...], "next": c|null}``.
Errors are JSON: 400 ``{"error": "bad_parameter", "parameter": name, "message": ...}``,
401 ``{"error": "unauthorized"}``, 404 ``{"error": "not_found"}``.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from node.aggregation import params as p
from node.aggregation.grouping import public
from node.aggregation.outcome import OUTCOMES
from node.aggregation.paging import encode_cursor
from node.aggregation.query import Window, filtered_page, matches, stats, timeline
from node.aggregation.store import AttackStore
from node.queue.keys import Keys

SCAN_BUDGET = 20000  # index entries one list call may scan before returning a short page
MAX_EXCLUSION_BYTES = 16384
MAX_TIMELINE_POINTS = 2000
MAX_TIMELINE_MINUTES = 31 * 1440
EXCLUSION_FIELDS = ("id", "class", "rule_id", "point", "host", "path_prefix", "client_cidr",
                    "comment", "created")


@dataclass(frozen=True, slots=True)
class Deps:
    """What the handlers need, stored under one typed app key."""

    redis: aioredis.Redis
    keys: Keys
    store: AttackStore


DEPS = web.AppKey("deps", Deps)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status,
                        content_type="application/json")


def _window(query: Any) -> Window:
    lo, hi = p.time_range(p.timestamp(query, "since"), p.timestamp(query, "until"))
    return Window(lo=lo, hi=hi, after=p.cursor(query))


ATTACK_PARAMS = ("class", "client_ip", "host", "application", "outcome", "since", "until",
                 "limit", "cursor")


async def list_attacks(request: web.Request) -> web.Response:
    deps, q = request.app[DEPS], request.query
    p.check_known(q, ATTACK_PARAMS)
    filters = {"class": p.attack_class(q), "client_ip": p.ip(q, "client_ip"),
               "host": p.text(q, "host"), "application": p.text(q, "application"),
               "outcome": p.choice(q, "outcome", ("", *OUTCOMES), "")}
    page = await filtered_page(deps.store, deps.keys.attacks_index, deps.keys.attack,
                               matches(filters), _window(q), p.limit(q), SCAN_BUDGET)
    return json_response({"items": [public(a, samples=False) for a in page.items],
                          "next": page.next})


async def get_attack(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    attack_id = request.match_info["id"]
    p.check_known(request.query, ())
    attack = None
    if p.ID_RE.fullmatch(attack_id):
        attack = await deps.store.get_attack(attack_id)
    if attack is None:
        raise web.HTTPNotFound(text="attack not found")
    return json_response(public(attack))


HIT_PARAMS = ("request_id", "class", "client_ip", "host", "attack_id", "source", "since",
              "until", "limit", "cursor")


async def list_hits(request: web.Request) -> web.Response:
    deps, q = request.app[DEPS], request.query
    p.check_known(q, HIT_PARAMS)
    filters = {"request_id": p.text(q, "request_id"), "class": p.attack_class(q),
               "client_ip": p.ip(q, "client_ip"), "host": p.text(q, "host"),
               "attack_id": p.text(q, "attack_id"), "source": p.text(q, "source")}
    page = await filtered_page(deps.store, deps.keys.hits_index, deps.keys.hit,
                               matches(filters), _window(q), p.limit(q), SCAN_BUDGET)
    return json_response({"items": page.items, "next": page.next})


async def get_stats(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    p.check_known(request.query, ())
    return json_response(await stats(deps.redis, deps.keys))


async def get_timeline(request: web.Request) -> web.Response:
    deps, q = request.app[DEPS], request.query
    p.check_known(q, ("since", "until", "bucket"))
    until = p.timestamp(q, "until")
    until = time.time() if until is None else until  # an explicit until=0 is a time, not "now"
    since = p.timestamp(q, "since")
    since = until - 86400 if since is None else since
    p.time_range(since, until)
    if (until - since) / 60 > MAX_TIMELINE_MINUTES:
        raise p.BadParameter("since", f"range longer than {MAX_TIMELINE_MINUTES // 1440} days")
    bucket = _bucket(q, since, until)
    return json_response(await timeline(deps.redis, deps.keys, since, until, bucket))


def _bucket(q: Any, since: float, until: float) -> int:
    """Seconds per point, a multiple of 60 (counts are kept per minute); by default the
    range in about 120 points."""
    raw = p.text(q, "bucket")
    if raw is None:
        return max(60, math.ceil((until - since) / 120 / 60) * 60)
    if not raw.isdigit() or not 60 <= int(raw) <= 86400 * 31:
        raise p.BadParameter("bucket", "expected whole seconds from 60 to 2678400")
    bucket = math.ceil(int(raw) / 60) * 60
    if (until - since) / bucket > MAX_TIMELINE_POINTS:
        raise p.BadParameter("bucket", f"too small for the range (max {MAX_TIMELINE_POINTS} "
                             "points)")
    return bucket


# ---------------------------------------------------------------------- exclusions

async def list_exclusions(request: web.Request) -> web.Response:
    """Exclusions newest first; the set is small, so it is read whole and paged in memory."""
    deps, q = request.app[DEPS], request.query
    p.check_known(q, ("limit", "cursor"))
    size, after = p.limit(q), p.cursor(q)
    raw = await deps.redis.hgetall(deps.keys.exclusions)
    items = []
    for value in raw.values():
        try:
            items.append(orjson.loads(value))
        except orjson.JSONDecodeError:
            continue
    ordered = sorted(((float(e.get("created") or 0), str(e.get("id"))), e) for e in items
                     if isinstance(e, dict))
    ordered.reverse()
    if after is not None:
        ordered = [(pos, e) for pos, e in ordered if pos < after]
    page = ordered[:size]
    following = encode_cursor(page[-1][0]) if len(ordered) > size else None
    return json_response({"items": [e for _, e in page], "next": following})


async def _exclusion_body(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if len(body) > MAX_EXCLUSION_BYTES:
        raise p.BadParameter("body", f"larger than {MAX_EXCLUSION_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise p.BadParameter("body", "not JSON") from None
    if not isinstance(data, dict):
        raise p.BadParameter("body", "expected a JSON object")
    for name in data:
        if name not in EXCLUSION_FIELDS:
            raise p.BadParameter(str(name)[:64], "unknown exclusion field")
    return data


def validate_exclusion(data: dict[str, Any]) -> dict[str, Any]:
    """Fill id/created/comment, then the detection engine's own parser decides."""
    from node.detectors.exclusions import parse_exclusion

    data = dict(data)
    data["id"] = p.identifier(str(data.get("id") or uuid.uuid4().hex[:16]))
    data["created"] = time.time()
    data.setdefault("comment", "")
    if not any(data.get(k) for k in ("class", "rule_id", "point", "host", "path_prefix",
                                      "client_cidr")):
        raise p.BadParameter("body", "an exclusion needs at least one of class, rule_id, "
                             "point, host, path_prefix, client_cidr")
    try:
        parse_exclusion(data)
    except ValueError as exc:
        message = str(exc)
        named = next((f for f in EXCLUSION_FIELDS if message.startswith(f)), "body")
        raise p.BadParameter(named, message) from None
    return data


# Change the hash and bump the version together, and only when something changed: workers
# reload when the version moves (node/processing/exclusion_sync.py).
CREATE_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[2]) return 1
end
return 0"""
DELETE_SCRIPT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[2]) return 1 end
return 0"""


async def create_exclusion(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    p.check_known(request.query, ())
    data = validate_exclusion(await _exclusion_body(request))
    created = await deps.redis.eval(CREATE_SCRIPT, 2, deps.keys.exclusions,
                                    deps.keys.exclusions_version, data["id"], orjson.dumps(data))
    if not created:
        return json_response({"error": "conflict", "parameter": "id",
                              "message": "an exclusion with this id exists"}, status=409)
    return json_response(data, status=201)


async def delete_exclusion(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    p.check_known(request.query, ())
    exclusion_id = request.match_info["id"]
    if not p.ID_RE.fullmatch(exclusion_id) or not await deps.redis.eval(
            DELETE_SCRIPT, 2, deps.keys.exclusions, deps.keys.exclusions_version,
            exclusion_id):
        raise web.HTTPNotFound(text="exclusion not found")
    return json_response({"deleted": exclusion_id})


def add_routes(app: web.Application) -> None:
    from node.aggregation.export import export

    app.router.add_get("/api/v1/attacks", list_attacks)
    app.router.add_get("/api/v1/attacks/{id}", get_attack)
    app.router.add_get("/api/v1/hits", list_hits)
    app.router.add_get("/api/v1/stats", get_stats)
    app.router.add_get("/api/v1/timeline", get_timeline)
    app.router.add_get("/api/v1/exclusions", list_exclusions)
    app.router.add_post("/api/v1/exclusions", create_exclusion)
    app.router.add_delete("/api/v1/exclusions/{id}", delete_exclusion)
    app.router.add_get("/api/v1/export", export)
