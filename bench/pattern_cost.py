"""Which rule patterns make the Hyperscan scan slow: per-pattern scan time on the corpus.

A tool for rule authors. Every pattern is compiled alone (as the engine's scan groups
compile it: MULTILINE) and scans the joined values of every corpus request in its scan
group; prints the costliest patterns with their time per MB and their match counts. A
pattern that costs far more than the others (large bounded repeats such as ``.{0,400}``,
leading classes such as ``[^a-z]``, ``\\s*`` before the first literal) slows every request.

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
from node.detectors.prefilter import GROUPS, SEP, group_of  # noqa: E402
from node.detectors.rewrite import scan_regex  # noqa: E402


def group_buffers(corpus: Path) -> list[list[bytes]]:
    """Per scan group, one joined buffer per corpus request."""
    out: list[list[bytes]] = [[] for _ in GROUPS]
    for f in sorted(corpus.glob("*.jsonl")):
        for case in read_cases(f):
            parts: list[list[bytes]] = [[] for _ in GROUPS]
            for point in extract(to_record(case), Limits()):
                parts[group_of(point.mask)] += [_encode(v) for v in variants(point.value)]
            for g, segs in enumerate(parts):
                if segs:
                    out[g].append(SEP.join(segs))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    buffers = group_buffers(Path(args.corpus))
    pack = load_pack(DetectionConfig())
    rows = []
    for rule in pack.rules:
        for i, pat in enumerate(rule.patterns):
            rows.append(measure(rule.id, i, pat, rule.point_mask, buffers))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"{'ms':>8} {'share':>6} {'matches':>8}  rule[pattern]")
    for ms, matches, name in rows[: args.top]:
        print(f"{ms:8.1f} {100 * ms / total:5.1f}% {matches:8d}  {name}")
    print(f"total {total:.0f} ms over {len(rows)} patterns (each scanned alone)")
    return 0


def measure(rule_id: str, i: int, pat, mask: int, buffers: list[list[bytes]]):
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[scan_regex(pat.regex).encode()], ids=[0], elements=1,
               flags=[pat.hs_flags | hyperscan.HS_FLAG_MULTILINE])
    scratch = hyperscan.Scratch(db)
    count = [0]

    def on_match(*_a: object) -> None:
        count[0] += 1

    t0 = time.perf_counter()
    for g, (_, bits) in enumerate(GROUPS):
        if mask & bits:
            for buf in buffers[g]:
                db.scan(buf, match_event_handler=on_match, scratch=scratch)
    return (time.perf_counter() - t0) * 1000, count[0], f"{rule_id}[{i}]"


if __name__ == "__main__":
    raise SystemExit(main())
