"""Pattern rewrites for the scan databases keep "does it match somewhere" unchanged."""

from __future__ import annotations

import random
import re

import pytest

from node.detectors.rewrite import joined_anchors, may_cross, top_level_alternatives, trim_tails

TRIM = [
    (r"\[[^\]]*\][^\[\]=]+", r"\[[^\]]*\][^\[\]=]"), (r"abc\s+", r"abc\s"),
    (r"x{3,}", "x{3}"), (r"x{2,5}?", "x{2}"), (r"foo|bar\w+|baz", r"foo|bar\w|baz"),
    (r"(?:ab|cd)+", "(?:ab|cd)"), (r"a\+", r"a\+"), (r"[+]", "[+]"), (r"x{0,4}", "x{0,4}"),
    (r"a(b|c+)", r"a(b|c+)"), (r"a*+", "a*+"), (r"[]+]", "[]+]"), (r"a|", "a|"),
]


@pytest.mark.parametrize("regex,expected", TRIM, ids=[t[0] for t in TRIM])
def test_trim_tails(regex: str, expected: str) -> None:
    assert trim_tails(regex) == expected


def test_trimmed_patterns_match_the_same_strings() -> None:
    rng = random.Random(7)
    alphabet = "ab[]= x\n"
    for regex, _ in TRIM:
        original, trimmed = re.compile(regex), re.compile(trim_tails(regex))
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            assert bool(original.search(text)) == bool(trimmed.search(text)), (regex, text)


def test_alternatives_respect_groups_classes_and_escapes() -> None:
    assert top_level_alternatives(r"a|(b|c)|[|]|\||d") == ["a", "(b|c)", "[|]", r"\|", "d"]


ANCHORS = [
    (r"^admin$", r"(?:^|\x00)admin(?:$|\x00)"), (r"\Aadmin\z", r"(?:\A|\x00)admin(?:\z|\x00)"),
    (r"(?:^|/)etc", r"(?:(?:^|\x00)|/)etc"), (r"[^a]x", r"[^a]x"), (r"[$^]", r"[$^]"),
    (r"[]^]", r"[]^]"), (r"a\^b\$", r"a\^b\$"), (r"\Q^$\E", r"\Q^$\E"),
]


@pytest.mark.parametrize("regex,expected", ANCHORS, ids=[a[0] for a in ANCHORS])
def test_joined_anchors(regex: str, expected: str) -> None:
    assert joined_anchors(regex) == expected


def test_joined_anchors_match_at_the_separator() -> None:
    joined = "\x00".join(["x", "admin", "y"])
    assert re.search(r"^admin$", joined) is None
    assert re.search(joined_anchors(r"^admin$"), joined) is not None


CROSS = [(r"union\s+select", False), (r"\bunion\b", False), (r"abc\.def", False),
         (r"a.b", True), (r"[^x]y", True), (r"[a-z]+", False), (r"\x00", True),
         (r"[[:cntrl:]]", True), (r"\S+", True), (r"foo\s*\n\s*bar", False), (r"\W", True)]


@pytest.mark.parametrize("regex,expected", CROSS, ids=[c[0] for c in CROSS])
def test_may_cross(regex: str, expected: bool) -> None:
    assert may_cross(regex) is expected
    if not expected:  # the claim itself: no match of it can contain the separator's NUL
        text = "ab\n\x00\ncd union \n\x00\n select x.\x00[]\nfoo \n\x00\n bar"
        assert not any("\x00" in m for m in re.findall(regex, text))
