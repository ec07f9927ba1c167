"""Profile ``Engine.analyze`` on the corpus: requests/s of one process and where time goes.

A developer tool for the detection engine (not a quoted figure: ``bench/detect.py`` prints
those). Converts the corpus to records once, then runs them through the engine.

    .venv/bin/python bench/engine_profile.py [--corpus DIR] [--profile] [--rounds N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.config import DetectionConfig  # noqa: E402
from node.corpus import read_cases, to_record  # noqa: E402
from node.detectors.engine import Engine  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    p.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--freeze", action="store_true",
                   help="gc.freeze() after loading (what a worker can do after Engine.load)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "oob-engine-cache"))
    args = p.parse_args()
    files = sorted(Path(args.corpus).glob("*.jsonl"))
    records = [to_record(c) for f in files for c in read_cases(f)]
    t0 = time.perf_counter()
    engine = Engine.load(DetectionConfig(), Path(args.cache), time_budget_ms=1000.0)
    print(f"load {time.perf_counter() - t0:.2f}s cache_hit={engine.cache_hit} "
          f"rules={len(engine.rules)} records={len(records)}")
    if args.freeze:
        gc.freeze()
    rates = []
    for _ in range(args.rounds):
        # Each round starts with an empty value memo: a repeated corpus must not count as
        # repeated traffic (values repeating inside one pass still profit, as in real traffic).
        engine.clear_memo()
        t0, c0 = time.perf_counter(), time.process_time()
        for r in records:
            engine.analyze(r)
        rates.append((len(records) / (time.perf_counter() - t0),
                      len(records) / (time.process_time() - c0)))
    # CPU time too: on a shared machine the wall clock also counts other processes' turns.
    print("engine requests/s per round (cold memo), wall / cpu: "
          + ", ".join(f"{w:,.0f} / {c:,.0f}" for w, c in rates))
    print(f"stats {engine.stats}")
    if args.profile:
        engine.clear_memo()
        prof = cProfile.Profile()
        prof.enable()
        for r in records:
            engine.analyze(r)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
