"""Every rule's own examples, through the full engine and through the prefilter alone.

Parametrized over every rule of the built-in packs, so each pack the rules engineer adds is
covered without touching this file (the ``oob-node rules test`` driver, as a test).
"""

from __future__ import annotations

import pytest

from node.config import DetectionConfig
from node.detectors.cli import example_failures
from node.detectors.engine import Engine
from node.detectors.pack import Rule, Verdicts, load_pack

# Collection must be fast: parse the packs without compiling each pattern alone.
_PACK = load_pack(DetectionConfig(), Verdicts(optimistic=True))
RULES = list(_PACK.rules)


def test_builtin_packs_load_cleanly(full_engine: Engine) -> None:
    report = full_engine.report
    assert report.file_errors == ()
    assert [(r.id, r.error) for r in report.failed] == []
    assert len(full_engine.rules) == len(RULES) > 0


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_examples(full_engine: Engine, rule: Rule) -> None:
    assert example_failures(full_engine, rule) == []


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_prefilter_over_approximates(full_engine: Engine, rule: Rule) -> None:
    """Whatever the full engine matches on any example, Hyperscan alone flags too."""
    for ex in (*rule.match, *rule.no_match):
        full = full_engine.match_value(ex.value, ex.point, ex.name)
        pre = full_engine.match_value(ex.value, ex.point, ex.name, prefilter_only=True)
        assert full <= pre, (ex.value, full - pre)
