"""Profile ``Engine.analyze`` on the corpus: requests/s of one process and where time goes.

A developer tool for the detection engine (``bench/detect.py`` prints the quoted speed
figures). Converts the corpus to records once, then runs them through the engine.

``--instructions`` runs the rounds again under valgrind's callgrind (Debian ``valgrind``),
counting the instructions executed inside the compiled ``Engine.analyze`` only: exact and
repeatable where timings drift by 20% from one run to the next on a shared machine, so
the measure to compare two versions of the hot path by. It needs the compiled hot path
(the count starts at the compiled method's entry) and takes a few minutes.

    .venv/bin/python bench/engine_profile.py [--corpus DIR] [--profile] [--rounds N]
    .venv/bin/python bench/engine_profile.py --instructions [--rounds N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.config import DetectionConfig  # noqa: E402
from node.corpus import read_cases, to_record  # noqa: E402
from node.detectors import hotpath  # noqa: E402
from node.detectors.engine import Engine  # noqa: E402

# The C entry point mypyc gives Engine.analyze: callgrind counts only while inside it.
ANALYZE_SYMBOL = "CPyPy_engine___Engine___analyze"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"))
    p.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--freeze", action="store_true",
                   help="gc.freeze() after loading (what a worker can do after Engine.load)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "oob-engine-cache"))
    p.add_argument("--instructions", action="store_true",
                   help="also count the instructions per request under valgrind's callgrind")
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
    if args.instructions:
        return count_instructions(args, len(records))
    return 0


def count_instructions(args: argparse.Namespace, requests: int) -> int:
    """Run this script's rounds under callgrind (the databases are cached by now, so the
    child does not compile them) and print the instructions per request."""
    if shutil.which("valgrind") is None:
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    if hotpath.describe() != "compiled (mypyc)":
        print(f"--instructions needs the compiled hot path; this one is {hotpath.describe()}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--toggle-collect={ANALYZE_SYMBOL}",
             f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, __file__,
             "--corpus", args.corpus, "--cache", args.cache, "--rounds", str(args.rounds)]
            + (["--freeze"] if args.freeze else []),
            capture_output=True, text=True, check=False)
    collected = re.search(r"Collected : (\d+)", child.stderr)
    if child.returncode != 0 or collected is None:
        print(child.stderr[-2000:], file=sys.stderr)
        return 1
    count = int(collected.group(1))
    print(f"instructions inside Engine.analyze: {count:,} for {args.rounds} round(s) of "
          f"{requests} requests = {count / (args.rounds * requests):,.0f} per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
