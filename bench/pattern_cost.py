"""Which rule patterns make the Hyperscan scan slow: per-pattern scan time on the corpus.

A tool for rule authors. Every pattern is compiled alone, as the engine's scan databases
compile it (``rewrite.scan_regex``, ``prefilter.scan_flags``), and scans every value (and
decoded variant) of the corpus requests that its scan groups see, one call per value as the
engine does; prints the costliest patterns, minus the cost of the calls themselves (a
pattern that never matches anything), with their match counts. A pattern that costs far
more than the others (large bounded repeats such as ``.{0,400}``, leading classes such as
``[^a-z]``, ``\\s*`` before the first literal, short common words) slows every request;
most cost is spread thin over many patterns, though (the sum is the database's cost).

    .venv/bin/python bench/pattern_cost.py [--corpus DIR] [--top N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hyperscan

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.config import DetectionConfig  # noqa: E402
from node.corpus import read_cases, to_record  # noqa: E402
from node.detectors.decode import variants  # noqa: E402
from node.detectors.engine import _encode  # noqa: E402
from node.detectors.pack import load_pack  # noqa: E402
from node.detectors.points import Limits, extract  # noqa: E402
from node.detectors.prefilter import GROUPS, group_of, scan_flags  # noqa: E402
from node.detectors.rewrite import scan_regex  # noqa: E402


def group_buffers(corpus: Path) -> list[list[bytes]]:
    """Per scan group, every distinct value and variant of the corpus requests (the engine
    remembers repeated values)."""
    out: list[dict[bytes, None]] = [{} for _ in GROUPS]
    for f in sorted(corpus.glob("*.jsonl")):
        for case in read_cases(f):
            for point in extract(to_record(case), Limits()):
                for v in variants(point.value):
                    out[group_of(point.mask)][_encode(v)] = None
    return [list(d) for d in out]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    buffers = group_buffers(Path(args.corpus))
    pack = load_pack(DetectionConfig())
    rows = []
    base: dict[int, float] = {}
    for rule in pack.rules:
        if rule.point_mask not in base:
            base[rule.point_mask] = call_cost(rule.point_mask, buffers)
        for i, pat in enumerate(rule.patterns):
            ms, matches, name = measure(rule.id, i, pat, rule.point_mask, buffers)
            rows.append((ms - base[rule.point_mask], matches, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"{'ms':>8} {'share':>6} {'matches':>8}  rule[pattern]")
    for ms, matches, name in rows[: args.top]:
        print(f"{ms:8.1f} {100 * ms / total:5.1f}% {matches:8d}  {name}")
    print(f"total {total:.0f} ms over {len(rows)} patterns (each scanned alone, call cost "
          f"subtracted; negative figures are noise)")
    return 0


def measure(rule_id: str, i: int, pat, mask: int, buffers: list[list[bytes]]):
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[scan_regex(pat.regex).encode()], ids=[0], elements=1,
               flags=[scan_flags(pat)])
    seconds, count = scan_time(db, mask, buffers)
    return seconds * 1000, count, f"{rule_id}[{i}]"


def scan_time(db: hyperscan.Database, mask: int, buffers: list[list[bytes]]) -> tuple[float, int]:
    scratch = hyperscan.Scratch(db)
    count = [0]

    def on_match(*_a: object) -> None:
        count[0] += 1

    t0 = time.process_time()
    for g, (_, bits) in enumerate(GROUPS):
        if mask & bits:
            for buf in buffers[g]:
                db.scan(buf, match_event_handler=on_match, scratch=scratch)
    return time.process_time() - t0, count[0]


def call_cost(mask: int, buffers: list[list[bytes]]) -> float:
    """ms of the scan calls alone: a pattern that never matches."""
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[b"\\x00never\\x00"], ids=[0], elements=1, flags=[0])
    return min(scan_time(db, mask, buffers)[0] for _ in range(3)) * 1000


if __name__ == "__main__":
    raise SystemExit(main())
