"""The HTTP API on a real aiohttp server over a real Redis: every endpoint, its errors (401,
400 naming the parameter, 404), filters, keyset paging under concurrent inserts, stats,
timeline, exclusions, the console's static files and the security headers."""

from __future__ import annotations

import time

import pytest
from agg_helpers import T0, make_hit, wait_for, xadd_hits
from conftest import TOKEN

A, B = "203.0.113.7", "198.51.100.9"

ENDPOINTS = [("GET", "/api/v1/attacks"), ("GET", "/api/v1/attacks/abc"),
             ("GET", "/api/v1/hits"), ("GET", "/api/v1/stats"), ("GET", "/api/v1/timeline"),
             ("GET", "/api/v1/exclusions"), ("POST", "/api/v1/exclusions"),
             ("DELETE", "/api/v1/exclusions/abc"), ("GET", "/api/v1/export"),
             ("GET", "/api/v1/no-such-endpoint")]
BAD_TOKENS = [None, f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN[:-1]}"]
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@pytest.mark.parametrize("method,path", ENDPOINTS)
async def test_api_needs_the_token(client, method, path):
    for header in BAD_TOKENS:
        headers = {} if header is None else {"Authorization": header}
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 401, header
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


BAD_PARAMS = [
    ("/api/v1/attacks?limit=0", "limit"), ("/api/v1/attacks?limit=1001", "limit"),
    ("/api/v1/attacks?limit=ten", "limit"), ("/api/v1/attacks?class=bogus", "class"),
    ("/api/v1/attacks?client_ip=not-an-ip", "client_ip"),
    ("/api/v1/attacks?since=yesterday", "since"), ("/api/v1/attacks?until=nan", "until"),
    ("/api/v1/attacks?cursor=garbage", "cursor"), ("/api/v1/attacks?clas=sqli", "clas"),
    ("/api/v1/attacks?since=20&until=10", "since"), ("/api/v1/attacks?outcome=won", "outcome"),
    ("/api/v1/attacks?limit=1&limit=2", "limit"), ("/api/v1/hits?limit=-1", "limit"),
    ("/api/v1/hits?client_ip=1.2.3", "client_ip"), ("/api/v1/hits?cursor=W10", "cursor"),
    ("/api/v1/timeline?bucket=5", "bucket"), ("/api/v1/timeline?since=0", "since"),
    ("/api/v1/export?format=xml", "format"), ("/api/v1/export?kind=users", "kind"),
    ("/api/v1/stats?x=1", "x"), ("/api/v1/exclusions?limit=0", "limit"),
]


@pytest.mark.parametrize("path,parameter", BAD_PARAMS)
async def test_bad_parameters_are_named(client, auth, path, parameter):
    resp = await client.get(path, headers=auth)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_parameter" and body["parameter"] == parameter
    assert body["message"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/attacks/0123456789abcdef"), ("GET", "/api/v1/attacks/..%2f..%2fetc"),
    ("DELETE", "/api/v1/exclusions/nope"), ("GET", "/api/v1/nothing-here"),
    ("GET", "/console/../../etc/passwd"), ("GET", "/console/.hidden.js"),
    ("GET", "/console/app.py"), ("GET", "/console/nope.js")])
async def test_not_found_is_json(client, auth, method, path):
    resp = await client.request(method, path, headers=auth)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def seed(client, hits):
    return await client.deps.store.apply(hits)


def attack_hits(n_attacks: int, per_attack: int, ts0: float = T0) -> list[dict]:
    """``n_attacks`` attacks (one client IP each) of ``per_attack`` hits."""
    return [make_hit(f"a{a}-h{h}", ts=ts0 + a + h * 0.001, ip=f"10.0.{a // 250}.{a % 250 + 1}")
            for a in range(n_attacks) for h in range(per_attack)]


async def test_attack_list_and_detail(client, auth):
    await seed(client, attack_hits(3, 2))
    resp = await client.get("/api/v1/attacks", headers=auth)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["next"] is None
    assert [a["client_ip"] for a in body["items"]] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    assert all("sample_hits" not in a and a["hits"] == 2 for a in body["items"])
    detail = await (await client.get(f"/api/v1/attacks/{body['items'][0]['id']}",
                                     headers=auth)).json()
    assert len(detail["sample_hits"]) == 2
    assert not [k for s in detail["sample_hits"] for k in s if k.startswith("_")]
    assert not [k for k in detail if k.startswith("_")]


FILTER_CASES = [  # (query, expected (class, ip, host) of the attacks returned)
    ("class=sqli", {("sqli", A, "shop.example"), ("sqli", B, "shop.example"),
                    ("sqli", A, "api.example")}),
    (f"class=sqli&client_ip={A}", {("sqli", A, "shop.example"), ("sqli", A, "api.example")}),
    (f"class=sqli&client_ip={A}&host=api.example", {("sqli", A, "api.example")}),
    (f"class=xss&client_ip={B}", set()),
    (f"since={T0 + 150}", {("xss", A, "shop.example"), ("sqli", A, "api.example")}),
    (f"since={T0 + 150}&until={T0 + 250}", {("xss", A, "shop.example")}),
    (f"client_ip={A}&until={T0 + 250}", {("sqli", A, "shop.example"), ("xss", A, "shop.example")}),
]


@pytest.mark.parametrize("query,expected", FILTER_CASES)
async def test_attack_filters_combine(client, auth, query, expected):
    await seed(client, [
        make_hit("f1", ts=T0, ip=A), make_hit("f2", ts=T0 + 100, ip=B),
        make_hit("f3", ts=T0 + 200, ip=A, cls="xss", rule_id="xss-tag"),
        make_hit("f4", ts=T0 + 300, ip=A, host="api.example")])
    body = await (await client.get(f"/api/v1/attacks?{query}", headers=auth)).json()
    assert {(a["class"], a["client_ip"], a["host"]) for a in body["items"]} == expected


async def test_hit_filters_combine(client, auth):
    await seed(client, [make_hit("h1", ip=A), make_hit("h2", ip=B),
                        make_hit("h3", ip=A, cls="xss", rule_id="xss-tag"),
                        make_hit("h3-lua", ip=A, cls="xss", rule_id="xss-tag", source="lua",
                                 request_id="req-h3")])
    cases = {f"client_ip={A}&class=xss": {"h3", "h3-lua"}, "request_id=req-h3": {"h3", "h3-lua"},
             f"client_ip={A}": {"h1", "h3", "h3-lua"}, "class=sqli": {"h1", "h2"},
             "request_id=req-h3&source=lua": {"h3-lua"}}
    for query, expected in cases.items():
        body = await (await client.get(f"/api/v1/hits?{query}", headers=auth)).json()
        assert {h["record_id"] for h in body["items"]} == expected, query
    both = await (await client.get("/api/v1/hits?request_id=req-h3", headers=auth)).json()
    assert {h["duplicate"] for h in both["items"]} == {True, False}


async def collect(client, auth, path: str, limit: int, between=None) -> list[str]:
    seen, cursor, pages = [], None, 0
    while pages < 1000:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(f"{path}?{query}", headers=auth)).json()
        seen += [item["id"] for item in body["items"]]
        cursor, pages = body["next"], pages + 1
        if between is not None:
            await between(pages)
        if cursor is None:
            return seen
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("path", ["/api/v1/hits", "/api/v1/attacks"])
async def test_paging_is_stable_under_concurrent_inserts(client, auth, path):
    await seed(client, attack_hits(120, 1) + [make_hit(f"same-{i}", ts=T0 + 50, ip="10.9.9.9")
                                              for i in range(30)])  # a run of equal scores
    before = await collect(client, auth, path, limit=1000)

    async def insert(page: int) -> None:  # newer items, and a new attack each time
        await seed(client, [make_hit(f"new-{page}-{i}", ts=T0 + 10_000 + page,
                                     ip=f"10.8.{page}.{i + 1}") for i in range(3)])

    during = await collect(client, auth, path, limit=7, between=insert)
    assert len(during) == len(set(during))
    assert during == before


async def test_stats_follow_the_stream(client, auth):
    keys = client.deps.keys
    await client.deps.redis.hincrby(keys.records_by_source, "mirror", 5)
    await client.deps.redis.hincrby(keys.counters, "records", 5)
    await xadd_hits(client.deps.redis, keys.hits, attack_hits(4, 3))
    await xadd_hits(client.deps.redis, keys.hits, [make_hit("x1", cls="xss", rule_id="x")])

    async def drained() -> bool:
        stats = await (await client.get("/api/v1/stats", headers=auth)).json()
        return stats["queues"]["hits"] == {"length": 2, "pending": 0, "lag": 0}

    await wait_for(drained, "the hits stream to be consumed")
    stats = await (await client.get("/api/v1/stats", headers=auth)).json()
    assert stats["hits_by_class"] == {"sqli": 12, "xss": 1}
    assert stats["records_by_source"] == {"mirror": 5}
    assert stats["totals"]["records"] == 5
    assert stats["totals"]["hits_counted"] == 13 and stats["totals"]["attacks"] == 5
    assert set(stats["queues"]["requests"]) == {"length", "pending", "lag"}


async def test_timeline_counts_by_class(client, auth):
    now = time.time()
    base = now - now % 3600 - 3600  # a whole hour back: buckets are deterministic
    await seed(client, [make_hit("t1", ts=base + 10), make_hit("t2", ts=base + 70),
                        make_hit("t3", ts=base + 700, cls="xss", rule_id="x"),
                        make_hit("t4", ts=base + 1900)])
    body = await (await client.get(f"/api/v1/timeline?since={base}&until={base + 3599}"
                                   f"&bucket=600", headers=auth)).json()
    assert body["bucket"] == 600
    assert [p["ts"] for p in body["points"]] == [base + 600 * i for i in range(6)]
    counts = [p["counts"] for p in body["points"]]
    assert counts == [{"sqli": 2}, {"xss": 1}, {}, {"sqli": 1}, {}, {}]


async def test_exclusions_create_list_delete(client, auth):
    redis, keys = client.deps.redis, client.deps.keys
    resp = await client.post("/api/v1/exclusions", headers=auth,
                             json={"class": "sqli", "point": ["query", "id"],
                                   "host": "shop.example", "comment": "false positive"})
    assert resp.status == 201
    created = await resp.json()
    assert created["id"] and created["created"] > 0
    assert int(await redis.get(keys.exclusions_version)) == 1
    second = await (await client.post("/api/v1/exclusions", headers=auth,
                                      json={"rule_id": "xss-tag", "id": "x2"})).json()
    listed = await (await client.get("/api/v1/exclusions", headers=auth)).json()
    assert [e["id"] for e in listed["items"]] == [second["id"], created["id"]]
    page = await (await client.get("/api/v1/exclusions?limit=1", headers=auth)).json()
    rest = await (await client.get(f"/api/v1/exclusions?limit=1&cursor={page['next']}",
                                   headers=auth)).json()
    assert [e["id"] for e in page["items"] + rest["items"]] == [second["id"], created["id"]]
    assert rest["next"] is None
    dup = await client.post("/api/v1/exclusions", headers=auth, json={"rule_id": "a", "id": "x2"})
    assert dup.status == 409
    resp = await client.delete(f"/api/v1/exclusions/{created['id']}", headers=auth)
    assert resp.status == 200
    assert (await client.delete(f"/api/v1/exclusions/{created['id']}", headers=auth)).status \
        == 404
    assert int(await redis.get(keys.exclusions_version)) == 3
    assert list(await redis.hkeys(keys.exclusions)) == [b"x2"]


BAD_EXCLUSIONS = [  # (body, parameter named)
    (b"not json", "body"), (b"[1, 2]", "body"), (b"{}", "body"),
    (b'{"class": "bogus"}', "class"), (b'{"client_cidr": "10.0.0.0/99"}', "client_cidr"),
    (b'{"point": "query.id"}', "point"), (b'{"rule_id": "a", "owner": "me"}', "owner"),
    (b'{"rule_id": "a", "id": "../x"}', "id"),
]


@pytest.mark.parametrize("body,parameter", BAD_EXCLUSIONS)
async def test_bad_exclusions_are_refused(client, auth, body, parameter):
    resp = await client.post("/api/v1/exclusions", headers=auth, data=body)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == parameter
    assert await client.deps.redis.hlen(client.deps.keys.exclusions) == 0


@pytest.mark.parametrize("path", ["/", "/console/app.js", "/healthz", "/readyz", "/metrics",
                                  "/api/v1/stats", "/api/v1/nope", "/console/nope.css"])
async def test_security_headers_everywhere(client, auth, path):
    for headers in (auth, {}):
        resp = await client.get(path, headers=headers)
        for name, value in SECURITY.items():
            assert resp.headers[name] == value
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


async def test_console_health_and_metrics(client, auth):
    index = await client.get("/")
    assert index.status == 200 and index.content_type == "text/html"
    assert "/console/app.js" in await index.text()
    script = await client.get("/console/app.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    assert (await client.get("/healthz")).status == 200
    await wait_for(lambda: _ready(client), "readyz")
    await seed(client, [make_hit("m1")])
    client.aggregator._account(await client.deps.store.apply([make_hit("m2", ts=T0 + 1)]))
    text = await (await client.get("/metrics")).text()
    assert 'oob_aggregation_hits_total{class="sqli"} 1.0' in text
    assert "oob_sink_dropped_total" in text


async def _ready(client) -> bool:
    return (await client.get("/readyz")).status == 200
