"""The engine end to end on small packs: hits, points, scores and threshold, values kept
apart and anchors exact in the scan, confirmers, exclusions, time budget, and never
raising on attacker input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from detect_helpers import record, rule

from node.detectors.engine import Engine
from node.detectors.exclusions import ExclusionSet, parse_exclusion
from node.detectors.pack import point_name
from node.records import FRAGMENT_MAX_CHARS, HIT_FIELDS, hit_id

PACKS = {
    "sqli": [
        rule("sqli-union", [r"union\s+select"], match=["1 union select 2"], confirm="sql"),
        rule("sqli-weak", [r"\bor\b"], score=2, match=["a or b"]),
        rule("sqli-anchored", [r"^admin'--$"], match=["admin'--"]),
        rule("sqli-cross", [r"zz\s+yy"], match=["zz yy"]),
    ],
    "xss": [rule("xss-tag", [r"<script"], points=["args", "headers"], match=["<script>"],
                 confirm="html")],
    "scanner": [rule("scanner-ua", ["sqlmap"], points=["headers"], match=["sqlmap/1.7"],
                     examples={"match": [{"point": "headers", "name": "user-agent",
                                          "value": "sqlmap/1.7"}]})],
    "protocol": [rule("protocol-method", [r"[^A-Z]"], points=["method"], match=["get"],
                      flags=["dotall"]),
                 rule("protocol-sid", ["^sid$"], points=["arg_names"], match=["sid"],
                      unless="same_site_referer")],
    "ssrf": [rule("ssrf-local", ["//10\\."], points=["args", "headers"],
                  match=["http://10.1.2.3/"], skip_headers=["Referer"])],
    "open_redirect": [rule("open_redirect-dressed", [r"\w\.\w+\.\w+\.\w|\w\.\w+@"],
                           points=["args"], names=["return_to", "next"], when="lookalike_host",
                           examples={"match": [{"point": "args", "name": "next",
                                                "value": "app.example.com.evil.net"}]})],
}


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine(PACKS)


def classes(hits: list[dict[str, Any]]) -> set[str]:
    return {h["class"] for h in hits}


def test_hit_fields(engine: Engine) -> None:
    rec = record(id="rec-1", request_id="rq", client_ip="1.2.3.4", host=b"shop\xff",
                 path="/search", query="q=1%20union%20select%20password", method="GET",
                 response={"status": 200, "headers": [], "body": b"", "body_size": 0,
                           "body_truncated": False})
    (hit,) = engine.analyze(rec, application="shop")
    assert tuple(hit) == HIT_FIELDS
    assert hit["point"] == ["query", "q"] and hit["class"] == "sqli"
    assert hit["rule_id"] == "sqli-union" and hit["severity"] == "high" and hit["score"] == 5
    assert hit["id"] == hit_id("rec-1", "sqli-union", ["query", "q"])
    assert hit["host"] == "shop\ufffd" and hit["application"] == "shop"
    assert hit["response_status"] == 200 and hit["client_ip"] == "1.2.3.4"
    assert "union select" in hit["fragment"]


def test_one_hit_per_rule_and_point(engine: Engine) -> None:
    rec = record(query="q=1%2520union%2520select%25201%20union%20select%202&r=union+select+3")
    hits = engine.analyze(rec)
    assert sorted(tuple(h["point"]) for h in hits) == [("query", "q"), ("query", "r")]


def test_weak_rule_alone_stays_under_the_threshold(engine: Engine) -> None:
    assert engine.analyze(record(query="q=this%20or%20that")) == []


def test_rule_applies_only_at_its_points(engine: Engine) -> None:
    assert engine.analyze(record(query="q=sqlmap")) == []
    hits = engine.analyze(record(headers=[["User-Agent", "sqlmap/1.7"]]))
    assert [h["point"] for h in hits] == [["header", "user-agent"]]


def test_skip_headers_leaves_those_headers_alone(engine: Engine) -> None:
    url = "http://10.1.2.3/admin"
    assert engine.analyze(record(headers=[["Referer", url]])) == []
    hits = engine.analyze(record(query=f"u={url}", headers=[["Referer", url], ["X-Api", url]]))
    assert sorted(h["point"] for h in hits) == [["header", "x-api"], ["query", "u"]]


@pytest.mark.parametrize("referer,reported", [
    (None, True), ("https://elsewhere.example/", True), ("https://shop.example.evil/", True),
    ("https://shop.example/cart", False), ("https://www.shop.example:8443/", False),
    ("http://[::1/", True),  # malformed: no same site
])
def test_unless_condition_silences_the_rule_for_that_request(
        engine: Engine, referer: str | None, reported: bool) -> None:
    headers = [] if referer is None else [["Referer", referer]]
    hits = engine.analyze(record(host="shop.example:443", query="sid=1", headers=headers))
    assert [h["rule_id"] for h in hits] == (["protocol-sid"] if reported else [])


@pytest.mark.parametrize("query,reported", [
    ("returnTo=https://shop.example.test.evil.net/", True),
    ("return-to=//example.test@evil.net", True),
    ("user.next=example.test.attacker.io", False),  # "usernext" is not a name of the rule
    ("next=https://shop.example.test/cart", False),
    ("next=https://cdn.example.test/a.b.c", False),  # same site
    ("next=https://example.test.s3.amazonaws.com/a.png", False),  # a bucket named after it
    ("q=https://shop.example.test.evil.net/", False),  # not a name of the rule
])
def test_when_condition_and_names_judge_the_point_in_its_request(
        engine: Engine, query: str, reported: bool) -> None:
    hits = engine.analyze(record(host="shop.example.test:8443", query=query))
    assert [h["rule_id"] for h in hits] == (["open_redirect-dressed"] if reported else [])
    # The same value in a request to that other site is no look-alike of anything.
    assert engine.analyze(record(host="evil.net", query=query)) == []


@pytest.mark.parametrize("path,name", [
    (("query", "returnTo"), "returnto"), (("body", "form", "Return_To"), "returnto"),
    (("json", "auth", "next"), "next"), (("json", "items", "3"), "items"),
    (("query", "next", "#joined"), "next"), (("body", "multipart", "next"), "next"),
    (("cookie", "return-to"), "returnto"), (("header", "referer"), "referer"),
    (("path",), ""), (("body", "json"), ""), (("path", "3"), ""),
])
def test_point_name(path: tuple[str, ...], name: str) -> None:
    assert point_name(path) == name


def test_method_rule_never_fires_on_other_values(engine: Engine) -> None:
    assert engine.analyze(record(method="GET", query="q=lowercase value")) == []
    assert classes(engine.analyze(record(method="get"))) == {"protocol"}


def test_no_match_across_values(engine: Engine) -> None:
    # "zz" ends one value, "yy" starts the next: joined they would match.
    rec = record(query="a=zz&b=yy")
    assert engine.analyze(rec) == []
    assert engine.match_value("zz  yy", "args") == {"sqli-cross"}


def test_anchors_hold_for_every_value_of_the_buffer(engine: Engine) -> None:
    hits = engine.analyze(record(query="a=x&b=admin'--&c=y"))
    assert [h["rule_id"] for h in hits] == ["sqli-anchored"]
    assert engine.analyze(record(query="a=x&b=admin'--z")) == []
    assert engine.analyze(record(query="b=admin'--%0Amore")) == []  # $ before a newline


def test_confirmer_rejects_look_alikes(engine: Engine) -> None:
    assert engine.analyze(record(query="q=the%20union%20selection%20of%20a%20committee")) == []
    assert engine.analyze(record(query="q=<scripture>")) == []
    assert classes(engine.analyze(record(query="q=<script>alert(1)</script>"))) == {"xss"}


def test_decoded_variants_are_scanned(engine: Engine) -> None:
    for query in ("q=1%252F**%252Funion%252F**%252Fselect%25201",
                  "q=%EF%BC%9Cscript%EF%BC%9Ealert(1)",  # fullwidth <
                  "q=PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="):  # base64
        assert classes(engine.analyze(record(query=query))), query


def test_exclusions_static_and_passed(make_engine: Callable[..., Engine]) -> None:
    rec = record(query="q=1%20union%20select%202", client_ip="10.1.2.3", path="/admin/x")
    engine = make_engine(PACKS, exclusions=[{"rule_id": "sqli-union", "path_prefix": "/admin"}])
    assert engine.analyze(rec) == []
    engine = make_engine(PACKS)
    assert engine.analyze(rec)
    dynamic = ExclusionSet([parse_exclusion({"id": "e1", "client_cidr": "10.0.0.0/8"})])
    assert engine.analyze(rec, dynamic) == []
    other = ExclusionSet([parse_exclusion({"id": "e2", "point": ["query", "other"]})])
    assert engine.analyze(rec, other)


def test_time_budget_stops_confirming_and_is_counted(make_engine: Callable[..., Engine]
                                                     ) -> None:
    engine = make_engine(PACKS, time_budget_ms=1e-9)
    rec = record(query="q=1%20union%20select%202&x=<script>alert(1)</script>")
    assert engine.analyze(rec) == []  # both rules need a confirmer: none ran in time
    assert engine.stats.budget_overruns == 1
    assert engine.analyze(record(headers=[["User-Agent", "sqlmap"]]))  # no confirmer needed


def test_fragment_is_capped(engine: Engine) -> None:
    (hit,) = engine.analyze(record(query="q=" + "a" * 5000 + "%20union%20select%201"))
    assert len(hit["fragment"]) <= FRAGMENT_MAX_CHARS and hit["fragment"].endswith("select")


GARBAGE = [
    {},
    {"id": 5, "method": None, "path": 3, "query": ["x"], "headers": "nope", "body": "str"},
    {"id": "x", "headers": [["a"]], "body": b"x"},
    {"id": "x", "headers": [[1, 2]], "path": b"\xff" * 10, "query": b"\xff=\xfe"},
]


@pytest.mark.parametrize("rec", GARBAGE, ids=[str(i) for i in range(len(GARBAGE))])
def test_never_raises_on_malformed_records(engine: Engine, rec: dict[str, Any]) -> None:
    assert isinstance(engine.analyze(rec), list)  # type: ignore[arg-type]


HOSTILE = [
    ("1 MB query value", {"query": "q=" + "union%20select%20" * 60000}),
    ("deep json", {"method": "POST", "body": b"[" * 100000 + b"]" * 100000,
                   "headers": [["Content-Type", "application/json"]]}),
    ("many args", {"query": "&".join(f"a{i}=<script>" for i in range(20000))}),
    ("nested base64", {"query": "q=" + "VkZaU1NtVkZNVVZTVkVKYVRXcEZkMVJ1Y0ZwbGJVcFZWVmhzVGxK"
                                       "RlJqST0=" * 100}),
    ("invalid utf-8", {"path": bytes(range(256)) * 100, "query": bytes(range(256)) * 100}),
]


@pytest.mark.parametrize("name,fields", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_requests_are_bounded(engine: Engine, name: str, fields: dict[str, Any]) -> None:
    hits = engine.analyze(record(**fields))
    assert engine.stats.errors == 0
    assert len(hits) <= engine.cfg.max_points * len(engine.rules)
    assert all(len(h["fragment"]) <= FRAGMENT_MAX_CHARS for h in hits)


SHAPES = [r"ab\s*cd", r"a.c", r"[^x]{2}y", r"^ab", r"cd$", r"\Sz", r"[\r\n]q", r"b\W+c",
          r"^a.*d$", r"\bzq\b", r"c[^a]*$"]


def test_request_scan_equals_values_scanned_alone(make_engine: Callable[..., Engine]) -> None:
    """The prefilter guarantee on values built to straddle value boundaries: a request's
    points match exactly the rules each value matches alone."""
    import random

    packs = {"sqli": [rule(f"sqli-s{i}", [p], flags=["dotall"], match=["x"])
                      for i, p in enumerate(SHAPES)]}
    engine = make_engine(packs)
    rng = random.Random(11)
    for _ in range(300):
        values = ["".join(rng.choice("abcdqxyz \n") for _ in range(rng.randint(1, 6)))
                  for _ in range(rng.randint(2, 6))]
        alone = {(rid, i) for i, v in enumerate(values)
                 for rid in engine.match_value(v, "args", f"a{i}", prefilter_only=True)}
        engine.clear_memo()
        points = [(engine_point(i, v)) for i, v in enumerate(values)]
        joined = {(engine._checks[pid][0].id, i)  # noqa: SLF001
                  for i, (_, _, found) in engine._scan(points)  # noqa: SLF001
                  for pid in found}
        assert joined == alone, values


def engine_point(i: int, value: str):  # noqa: ANN201 - a Point
    from node.detectors.points import ARGS, Point
    return Point(ARGS, ("query", f"a{i}"), value)


@pytest.mark.parametrize("query,expected", [
    # The confirmer turns the strong rule down: the weak one alone is under the threshold.
    ("q=the%20union%20selection%20or%20a%20committee", set()),
    # Both confirmed (the weak one needs no confirmer): both count and both are reported.
    ("q=1%20union%20select%202%20or%201", {"sqli-union", "sqli-weak"}),
    # Nothing viable before confirming: the weak rule alone never reaches the confirm stage.
    ("q=this%20or%20that", set()),
])
def test_class_scores_count_only_confirmed_rules(engine: Engine, query: str,
                                                 expected: set[str]) -> None:
    assert {h["rule_id"] for h in engine.analyze(record(query=query))} == expected


def test_value_memo_is_bounded_and_changes_no_hit(make_engine: Callable[..., Engine],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from node.detectors import engine as engine_module

    monkeypatch.setattr(engine_module, "MEMO_SIZE", 40)
    engine = make_engine(PACKS)
    recs = [record(query=f"a={i}&b=1%20union%20select%20{i % 3}&c=or",
                   headers=[["User-Agent", "sqlmap" if i % 2 else "curl"]])
            for i in range(100)]
    first = [by_id(engine.analyze(r)) for r in recs]  # new values flood the memo: it restarts
    remembered = sum(map(len, engine._memo))  # noqa: SLF001
    assert engine._memo_len == remembered <= 40  # noqa: SLF001
    # The same hits, remembered values or not (their order may differ: flags of remembered
    # values come first).
    assert [by_id(engine.analyze(r)) for r in recs] == first
    assert any(first)


def by_id(hits: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {h["id"]: h for h in hits}


def test_a_scan_that_raises_leaves_no_value_remembered_as_clean(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = record(query="b=1%20union%20select%202")
    engine.clear_memo()
    engine.analyze(record())  # the method, path and headers remembered: only b's value is new

    class BrokenDatabase:
        def scan(self, *_args: object) -> None:
            raise RuntimeError("scratch in use")

    # The database under the Prefilter (a compiled class, whose methods cannot be patched)
    with monkeypatch.context() as patch:
        for db in engine._prefilter.groups[-1]:  # noqa: SLF001 - the "request" group
            patch.setattr(db, "db", BrokenDatabase())
        assert engine.analyze(rec) == []  # counted, never raised
    assert engine.stats.errors == 1
    assert engine.analyze(rec)  # scanned now, not taken from the memo as clean
