"""``oob-node rules test``: run every rule's examples and print a per-rule table.

A tool beside the request flow (``node/cli.py`` delegates here): it loads the packs exactly
as a processing worker does (``Engine.load``, same cache), then checks each rule's examples:
every ``match`` example must be matched by that rule through the full engine (decoding,
Hyperscan, ``re`` check, confirmer) and by the Hyperscan prefilter alone (the prefilter may
only over-approximate); no ``no_match`` example may be matched by the full engine. Exit 1
on any failed example, any rule that failed to load, or any unreadable pack file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TextIO

from node.config import NodeConfig
from node.detectors.engine import Engine
from node.detectors.pack import Example, Rule


@dataclass(frozen=True)
class RuleResult:
    rule_id: str
    cls: str
    status: str  # loaded | failed | disabled
    passed: int
    failures: tuple[str, ...]  # one line per failed example, or the load error


def example_failures(engine: Engine, rule: Rule) -> list[str]:
    """Why each failing example of ``rule`` fails (empty when all pass)."""
    out: list[str] = []
    for ex in rule.match:
        if rule.id not in engine.match_value(ex.value, ex.point, ex.name):
            out.append(f"match example not matched: {_show(ex)}")
        if rule.id not in engine.match_value(ex.value, ex.point, ex.name, prefilter_only=True):
            out.append(f"prefilter misses a match example: {_show(ex)}")
    for ex in rule.no_match:
        if rule.id in engine.match_value(ex.value, ex.point, ex.name):
            out.append(f"no_match example matched: {_show(ex)}")
    return out


def _show(ex: Example) -> str:
    # SECURITY: examples are attack strings: printed escaped, never raw to a terminal.
    return f"[{ex.point}:{ex.name}] {ex.value!r}"[:200]


def results(engine: Engine) -> list[RuleResult]:
    rules = {r.id: r for r in engine.rules}
    out = []
    for status in engine.report.rules:
        rule = rules.get(status.id)
        if rule is None:
            fails = (status.error,) if status.status == "failed" else ()
            out.append(RuleResult(status.id, status.cls, status.status, 0, fails))
            continue
        fails = example_failures(engine, rule)
        total = 2 * len(rule.match) + len(rule.no_match)
        out.append(RuleResult(rule.id, rule.cls, "loaded", total - len(fails), tuple(fails)))
    return out


def print_table(rows: list[RuleResult], file_errors: list[tuple[str, str]],
                out: TextIO) -> None:
    width = max([len(r.rule_id) for r in rows] + [4])
    print(f"{'rule':<{width}}  {'class':<15} {'status':<8} {'passed':>6} {'failed':>6}",
          file=out)
    for r in rows:
        print(f"{r.rule_id:<{width}}  {r.cls:<15} {r.status:<8} {r.passed:>6} "
              f"{len(r.failures):>6}", file=out)
    for r in rows:
        for why in r.failures:
            print(f"FAIL {r.rule_id}: {why}", file=out)
    for name, error in file_errors:
        print(f"FAIL pack file {name}: {error!r}", file=out)


def main(cfg: NodeConfig, args: argparse.Namespace | None = None, out: TextIO | None = None
         ) -> int:
    out = out or sys.stdout
    engine = Engine.load(cfg.detection, cfg.data_path / "cache")
    rows = results(engine)
    file_errors = list(engine.report.file_errors)
    print_table(rows, file_errors, out)
    failed = sum(1 for r in rows if r.failures)
    print(f"\n{len(rows)} rules: {len(engine.rules)} loaded, "
          f"{sum(1 for r in rows if r.status == 'failed')} failed to load, "
          f"{failed} with failures; {len(file_errors)} unreadable pack files", file=out)
    return 1 if failed or file_errors else 0
