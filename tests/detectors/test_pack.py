"""Rule pack loading: per-rule diagnostics, a bad rule never takes the pack down, disabled
rules and classes, the pack hash, and the compiled-database cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from detect_helpers import rule

from node.config import DetectionConfig
from node.detectors import cache
from node.detectors.engine import Engine
from node.detectors.pack import RuleError, Verdicts, parse_rule

GOOD = rule("sqli-good", [r"union\s+select"], match=["1 union select 2"])

BAD_RULES = [
    ("hyperscan syntax", rule("sqli-bad", ["(unclosed"]), "patterns[0]: Hyperscan"),
    ("empty match", rule("sqli-bad", ["a*"]), "patterns[0]"),
    ("bad severity", rule("sqli-bad", ["x"], severity="huge"), "severity"),
    ("bad point", rule("sqli-bad", ["x"], points=["querystring"]), "points"),
    ("bad flag", rule("sqli-bad", ["x"], flags=["ungreedy"]), "flags"),
    ("bad confirm", rule("sqli-bad", ["x"], confirm="magic"), "confirm"),
    ("bad score", rule("sqli-bad", ["x"], score="5"), "score"),
    ("no examples", {**rule("sqli-bad", ["x"]), "examples": {}}, "examples"),
    ("unknown field", {**rule("sqli-bad", ["x"]), "pattern": "x"}, "pattern"),
    ("bad condition", rule("sqli-bad", ["x"], unless="full_moon"), "unless"),
    ("bad when", rule("sqli-bad", ["x"], when="full_moon"), "when"),
    ("names not names", rule("sqli-bad", ["x"], names=[]), "names"),
    ("skip_headers without headers", rule("sqli-bad", ["x"], points=["args"],
                                          skip_headers=["referer"]), "skip_headers"),
    ("skip_headers not names", rule("sqli-bad", ["x"], skip_headers=[1]), "skip_headers"),
    ("wrong class prefix", rule("xss-bad", ["x"]), "id"),
    ("duplicate id", rule("sqli-good", ["y"], match=["y"]), "duplicate"),
]


@pytest.mark.parametrize("name,bad,why", BAD_RULES, ids=[b[0] for b in BAD_RULES])
def test_bad_rule_is_reported_and_the_rest_loads(make_engine: Callable[..., Engine], name: str,
                                                 bad: dict, why: str) -> None:
    engine = make_engine({"sqli": [GOOD, bad]})
    assert [r.id for r in engine.rules] == ["sqli-good"]
    failed = engine.report.failed
    assert len(failed) == 1 and why in failed[0].error, failed
    assert engine.match_value("1 union select 2", "args") == {"sqli-good"}


def test_lookaround_falls_back_to_prefilter_mode_with_re(make_engine: Callable[..., Engine]
                                                         ) -> None:
    lookahead = rule("sqli-look", [r"select\s+(?!from)\w+"], match=["select x"])
    engine = make_engine({"sqli": [lookahead]})
    (pattern,) = engine.rules[0].patterns
    assert pattern.prefilter and pattern.py is not None
    assert engine.match_value("select x", "args") == {"sqli-look"}
    assert engine.match_value("select from", "args") == set()
    assert engine.match_value("select from", "args", prefilter_only=True) == {"sqli-look"}


def test_unreadable_pack_file_is_reported(tmp_path: Path, make_engine: Callable[..., Engine]
                                          ) -> None:
    engine = make_engine({"sqli": [GOOD]})
    rules_dir = Path(engine.cfg.rules_dir or "")
    (rules_dir / "broken.yaml").write_text("class: sqli\nrules: [\n")
    (rules_dir / "alien.yaml").write_text("class: nonsense\nrules: []\n")
    engine = Engine.load(engine.cfg, tmp_path / "cache2")
    assert {name for name, _ in engine.report.file_errors} == {"broken.yaml", "alien.yaml"}
    assert [r.id for r in engine.rules] == ["sqli-good"]


def test_disabled_rules_and_classes(make_engine: Callable[..., Engine]) -> None:
    packs = {"sqli": [GOOD], "xss": [rule("xss-tag", ["<script"], match=["<script>"])]}
    engine = make_engine(packs, disabled_rules=["sqli-good"])
    assert [r.id for r in engine.rules] == ["xss-tag"]
    assert [r.id for r in engine.report.rules if r.status == "disabled"] == ["sqli-good"]
    engine = make_engine(packs, cache=None, disabled_classes=["xss"])
    assert [r.id for r in engine.rules] == ["sqli-good"]


def test_cache_hit_on_second_load_and_miss_after_a_change(
        make_engine: Callable[..., Engine]) -> None:
    first = make_engine({"sqli": [GOOD]})
    assert not first.cache_hit
    second = make_engine({"sqli": [GOOD]})
    assert second.cache_hit and second.pack.hash == first.pack.hash
    assert second.match_value("1 union select 2", "args") == {"sqli-good"}
    changed = make_engine({"sqli": [{**GOOD, "score": 6}]})
    assert not changed.cache_hit and changed.pack.hash != first.pack.hash


def test_corrupt_cache_is_recompiled(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    first = make_engine({"sqli": [GOOD]})
    for f in (tmp_path / "cache").glob("hs-*.bin"):
        f.write_bytes(b"garbage")
    again = make_engine({"sqli": [GOOD]})
    assert not again.cache_hit and again.match_value("1 union select 2", "args") == {
        "sqli-good"}
    assert first.pack.hash == again.pack.hash


def test_old_databases_are_pruned(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    for score in range(5, 5 + cache.KEEP_DATABASES + 2):  # every edit writes a new database
        make_engine({"sqli": [{**GOOD, "score": score}]})
    stale_tmp = cache_dir / ".tmp-dead-writer"
    stale_tmp.write_bytes(b"half")
    os.utime(stale_tmp, (0, 0))
    fresh_tmp = cache_dir / ".tmp-live-writer"
    fresh_tmp.write_bytes(b"half")
    newest = make_engine({"sqli": [{**GOOD, "score": 20}]})
    kept = sorted(cache_dir.glob("hs-*.bin"))
    assert len(kept) == cache.KEEP_DATABASES
    assert cache.db_path(cache_dir, newest.pack.hash) in kept
    assert not stale_tmp.exists() and fresh_tmp.exists()  # a live writer's file stays
    assert make_engine({"sqli": [{**GOOD, "score": 20}]}).cache_hit


def test_parse_rule_defaults() -> None:
    r = parse_rule(rule("sqli-x", ["abc"]), "sqli", verdicts=Verdicts())
    assert r.points == ("args", "path", "cookies", "headers")
    assert r.match[0].point == "args"
    with pytest.raises(RuleError, match="patterns"):
        parse_rule(rule("sqli-x", []), "sqli")


def test_hash_covers_engine_config(tmp_path: Path) -> None:
    from node.detectors.pack import pack_files, pack_hash
    cfg = DetectionConfig()
    files = pack_files(cfg)
    assert pack_hash(files, cfg) != pack_hash(files, DetectionConfig(disabled_rules=["x"]))


def test_prefilter_mode_survives_a_lost_verdict_file(make_engine: Callable[..., Engine],
                                                     tmp_path: Path) -> None:
    lookahead = rule("sqli-look", [r"select\s+(?!from)\w+"], match=["select x"])
    make_engine({"sqli": [lookahead]})
    (tmp_path / "cache" / "verdicts.bin").unlink()
    again = make_engine({"sqli": [lookahead]})
    assert again.cache_hit and again.rules[0].patterns[0].prefilter
    assert again.match_value("select from", "args") == set()
