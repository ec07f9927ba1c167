"""Pattern rewrites for the scan databases keep "does it match somewhere" unchanged."""

from __future__ import annotations

import random
import re

import pytest

from node.detectors.rewrite import top_level_alternatives, trim_tails

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
