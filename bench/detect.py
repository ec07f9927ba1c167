"""Detection quality and speed on a labeled corpus (the figures README "Detection quality" quotes).

Offline (default): each corpus line becomes the RequestRecord the receiver would build and
goes through ``Engine.analyze`` in this process. ``--live``: the corpus is replayed into a
running node's mirror listener (``oob-node replay``) and the hits are read back from the
``<prefix>:hits`` stream, joined on ``request_id`` (= the corpus ``id``).

Prints, per corpus class: attacks, detected %, class-correct % (of the detected ones), and
the benign false-positive rate per file and overall. The "reported class" of a request is
the class of its strongest rule (ties: the class total); ``scanner`` and ``protocol``
findings count as corpus class ``other``. Offline it also prints requests/s of one process
running the full engine, next to the raw Hyperscan block-mode rate on the same requests'
bytes, and their ratio; with the compiled hot path (``node/detectors/hotpath.py``), also
the rate of the same engine run from its Python sources, in a child process
(``--pure-python``), and the compiled/pure ratio.

    .venv/bin/python bench/detect.py [--corpus DIR_OR_FILE ...] [--misses CLASS] [--fp]
    .venv/bin/python bench/detect.py --live --target 127.0.0.1:8445 --redis-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hyperscan

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.detectors import hotpath  # noqa: E402

PURE_FLAG = "--pure-python"
if PURE_FLAG in sys.argv:
    hotpath.use_sources()  # before the engine's modules are imported, below

from node.config import DetectionConfig  # noqa: E402
from node.corpus import Case, class_scores, read_cases, reported_class, to_record, wire_request  # noqa: E402
from node.detectors.engine import Engine, freeze_loaded_state  # noqa: E402

DEFAULT_CORPUS = [REPO.parent / "shared" / "corpus", REPO / "tests" / "data"]

Result = dict[str, dict[str, tuple[int, int]]]  # case id -> {class: (best rule, total)}


# ----------------------------------------------------------------------------- corpus

def corpus_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.jsonl")) if p.is_dir() else [p] if p.exists() else []
    return files


def load(paths: Sequence[Path]) -> list[Case]:
    return [case for f in corpus_files(paths) for case in read_cases(f)]


# ----------------------------------------------------------------------------- offline

def bench_cache() -> Path:
    cache = Path(os.environ.get("OOB_BENCH_CACHE", tempfile.gettempdir())) / "oob-bench-hs"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def load_engine(rules_dir: str | None = None) -> Engine:
    t0 = time.perf_counter()
    engine = Engine.load(DetectionConfig(rules_dir=rules_dir), bench_cache(),
                         time_budget_ms=1000.0)
    freeze_loaded_state()  # as a processing worker does after loading
    print(f"engine load: {time.perf_counter() - t0:.1f} s "
          f"({'from the cache' if engine.cache_hit else 'compiled'})")
    for failed in engine.report.failed:
        print(f"rule failed: {failed.id}: {failed.error}", file=sys.stderr)
    for name, error in engine.report.file_errors:
        print(f"pack failed: {name}: {error}", file=sys.stderr)
    return engine


def analyze_offline(engine: Engine, cases: Sequence[Case]) -> tuple[Result, dict[str, list]]:
    results: Result = {}
    hits_by_id: dict[str, list] = {}
    for case in cases:
        hits = engine.analyze(to_record(case))
        results[case.id] = class_scores(hits)
        hits_by_id[case.id] = hits
    return results, hits_by_id


def throughput(engine: Engine, cases: Sequence[Case],
               rounds: int = 3) -> tuple[float, float, float]:
    """(engine requests/s, raw Hyperscan requests/s, raw MB/s), best of ``rounds`` (CPU
    time of this process: on a shared machine the wall clock also counts other processes'
    turns, alike for both figures)."""
    records = [to_record(c) for c in cases]
    wires = [wire_request(c) for c in cases]
    best_engine = best_raw = 0.0
    raw = raw_database(engine)
    for _ in range(rounds):
        # Each round starts with an empty value memo: replaying the same corpus again must
        # not count as repeated traffic (values repeating inside one pass still profit).
        engine.clear_memo()
        t0 = time.process_time()
        for r in records:
            engine.analyze(r)
        best_engine = max(best_engine, len(records) / (time.process_time() - t0))
        best_raw = max(best_raw, len(wires) / raw_scan_seconds(raw, wires))
    mb = sum(len(w) for w in wires) / 1e6
    return best_engine, best_raw, mb * best_raw / len(wires)


def raw_database(engine: Engine) -> tuple[hyperscan.Database, hyperscan.Scratch]:
    """Every pattern of the loaded rules in one block-mode database (the rules' own flags
    plus SINGLEMATCH, so the figure is the scan and not one callback per ``[\\r\\n]``;
    method-only rules are left out: the engine scans them on the method alone). Cached
    next to the engine's databases (compiling it takes as long as the engine's)."""
    patterns = [p for rule in engine.rules if rule.points != ("method",) for p in rule.patterns]
    exprs = [p.regex.encode("utf-8") for p in patterns]
    flags = [p.hs_flags | hyperscan.HS_FLAG_SINGLEMATCH for p in patterns]
    key = hashlib.sha256(repr((hyperscan.__version__, exprs, flags)).encode()).hexdigest()
    path = bench_cache() / f"raw-{key[:32]}.bin"
    try:
        db = hyperscan.loadb(path.read_bytes(), hyperscan.HS_MODE_BLOCK)
    except (OSError, hyperscan.error):
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(patterns))), elements=len(patterns),
                   flags=flags)
        path.write_bytes(hyperscan.dumpb(db))
    return db, hyperscan.Scratch(db)


def raw_scan_seconds(raw: tuple[hyperscan.Database, hyperscan.Scratch],
                     wires: Sequence[bytes]) -> float:
    """All of each request's bytes scanned once with the compiled database, block mode,
    no Python per-value work: the limit the engine could approach."""
    db, scratch = raw

    def on_match(*_args: object) -> None:
        return None

    t0 = time.process_time()
    for w in wires:
        db.scan(w, on_match, 0, None, scratch)  # positional: as cheap as the binding allows
    return time.process_time() - t0


# ----------------------------------------------------------------------------- live

def analyze_live(cases: Sequence[Case], files: Sequence[Path], args: argparse.Namespace) -> Result:
    from node.replay import replay_cases

    sent, failed = asyncio.run(replay_cases(cases, args.target, args.concurrency))
    print(f"replayed: {sent} sent, {failed} failed", file=sys.stderr)
    hits = asyncio.run(read_hits(args.redis_url, args.prefix, {c.id for c in cases},
                                 args.settle))
    return {cid: class_scores(hs) for cid, hs in hits.items()}


async def read_hits(url: str, prefix: str, ids: set[str], settle_s: float) -> dict[str, list]:
    """Read the whole hits stream until it stops growing for ``settle_s`` seconds."""
    import msgpack

    from node.config import RedisConfig
    from node.queue.connection import redis_client
    from node.queue.keys import ENTRY_FIELD, Keys

    redis = redis_client(RedisConfig(url=url, prefix=prefix, socket_timeout_s=10))
    keys = Keys(prefix)
    key, last_len, stable_since = keys.hits, -1, time.monotonic()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        length = await redis.xlen(key)
        if length != last_len or await _processing_busy(redis, keys.requests):
            last_len, stable_since = length, time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            break
        await asyncio.sleep(0.5)
    out: dict[str, list] = defaultdict(list)
    last = b"-"
    while True:
        entries = await redis.xrange(key, min=last, max="+", count=1000)
        entries = [e for e in entries if e[0] != last]
        if not entries:
            break
        for entry_id, fields in entries:
            for hit in msgpack.unpackb(fields[ENTRY_FIELD], raw=False):
                if hit.get("request_id") in ids:
                    out[hit["request_id"]].append(hit)
            last = entry_id
    await redis.aclose()
    return out


async def _processing_busy(redis: Any, stream: str) -> bool:
    """True while the processing group has entries waiting or in flight (or no group yet:
    the workers are still loading their rules)."""
    from node.queue.keys import PROCESSING_GROUP

    try:
        groups = await redis.xinfo_groups(stream)
    except Exception:  # noqa: BLE001 - no stream yet
        return True
    for g in groups:
        if g.get("name") in (PROCESSING_GROUP, PROCESSING_GROUP.encode()):
            return bool(g.get("pending") or g.get("lag"))
    return True


# ----------------------------------------------------------------------------- report

def table(cases: Sequence[Case], results: Result) -> list[str]:
    rows = ["class           attacks  detected%  class-ok%   benign   FP%"]
    att, det, ok = Counter(), Counter(), Counter()
    ben, fp = Counter(), Counter()
    for c in cases:
        got = reported_class(results.get(c.id, {}))
        if c.label == "attack":
            att[c.cls] += 1
            det[c.cls] += got is not None
            ok[c.cls] += got == c.cls
        else:
            ben[c.cls] += 1
            fp[c.cls] += got is not None
    for cls in sorted(set(att) | set(ben)):
        rows.append(_row(cls, att[cls], det[cls], ok[cls], ben[cls], fp[cls]))
    rows.append(_row("ALL", sum(att.values()), sum(det.values()), sum(ok.values()),
                     sum(ben.values()), sum(fp.values())))
    rows.append(_row("ALL but other", sum(v for k, v in att.items() if k != "other"),
                     sum(v for k, v in det.items() if k != "other"),
                     sum(v for k, v in ok.items() if k != "other"), 0, 0))
    return rows


def _pct(n: int, m: int) -> str:
    return f"{100.0 * n / m:8.1f}" if m else "       -"


def _row(cls: str, a: int, d: int, o: int, b: int, f: int) -> str:
    pct = _pct
    return f"{cls:<15} {a:7d}  {pct(d, a)}   {pct(o, d)}  {b:7d} {pct(f, b)}"


def per_file(cases: Sequence[Case], results: Result) -> list[str]:
    rows = ["file                        attacks detected%  benign   FP%"]
    by_file: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_file[c.file].append(c)
    for name, cs in sorted(by_file.items()):
        a = [c for c in cs if c.label == "attack"]
        b = [c for c in cs if c.label != "attack"]
        d = sum(1 for c in a if results.get(c.id))
        f = sum(1 for c in b if results.get(c.id))
        pa = f"{100.0 * d / len(a):8.1f}" if a else "       -"
        pb = f"{100.0 * f / len(b):6.2f}" if b else "     -"
        rows.append(f"{name:<27} {len(a):7d} {pa}  {len(b):6d} {pb}")
    return rows


def dump_cases(cases: Sequence[Case], results: Result, hits: dict[str, list],
               args: argparse.Namespace) -> None:
    """--misses CLASS / --fp / --wrong: the cases to look at while tuning."""
    for c in cases:
        got = reported_class(results.get(c.id, {}))
        attack = c.label == "attack"
        if (args.misses and attack and got is None and args.misses in (c.cls, "all")) or \
                (args.fp and not attack and got is not None) or \
                (args.wrong and attack and got not in (None, c.cls)):
            rules = sorted({h["rule_id"] for h in hits.get(c.id, [])})
            print(f"--- {c.id} [{c.cls}] got={got} rules={rules}")
            print(f"    {c.method} {c.path[:300]!r} body={c.body[:200]!r}")
            for n, v in c.headers:
                if n.lower() not in ("host", "accept", "accept-encoding", "accept-language",
                                     "connection", "content-length"):
                    print(f"    {n}: {v[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, action="append",
                    help="corpus directory or JSONL file (repeatable); default "
                         "../shared/corpus and tests/data")
    ap.add_argument("--rules-dir", default=None, help="extra rule pack directory")
    ap.add_argument("--live", action="store_true", help="replay into a running node")
    ap.add_argument("--target", default="127.0.0.1:8445", help="mirror listener (--live)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--redis-url", default=os.environ.get("OOB_REDIS_URL"),
                    help="Redis of the running node (--live)")
    ap.add_argument("--prefix", default="oob", help="key prefix of the running node (--live)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds the hits stream must stop growing before reading (--live)")
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput figures")
    ap.add_argument(PURE_FLAG, action="store_true",
                    help="run the hot path from its Python sources, not the compiled modules")
    ap.add_argument("--speed-only", action="store_true",
                    help="print the engine's throughput only (requests/s)")
    ap.add_argument("--misses", metavar="CLASS", help="print missed attacks of CLASS (or all)")
    ap.add_argument("--fp", action="store_true", help="print benign requests flagged")
    ap.add_argument("--wrong", action="store_true", help="print attacks given another class")
    args = ap.parse_args(argv)
    paths = args.corpus or [p for p in DEFAULT_CORPUS if p.exists()]
    cases = load(paths)
    if not cases:
        print("no corpus found", file=sys.stderr)
        return 2
    if args.speed_only:
        engine = Engine.load(DetectionConfig(rules_dir=args.rules_dir), bench_cache(),
                             time_budget_ms=1000.0)
        freeze_loaded_state()
        print(f"{throughput(engine, cases)[0]:.1f}")
        return 0
    print(f"corpus: {len(cases)} requests from {', '.join(f.name for f in corpus_files(paths))}")
    if args.live:
        if not args.redis_url:
            print("--live needs --redis-url (or OOB_REDIS_URL)", file=sys.stderr)
            return 2
        results, hits = analyze_live(cases, corpus_files(paths), args), {}
    else:
        engine = load_engine(args.rules_dir)
        results, hits = analyze_offline(engine, cases)
    print("\n".join(table(cases, results)))
    print()
    print("\n".join(per_file(cases, results)))
    dump_cases(cases, results, hits, args)
    if not args.live and not args.no_speed:
        eng, raw, mbs = throughput(engine, cases)
        print(f"\nthroughput, 1 process, full rule set ({len(engine.rules)} rules), value "
              f"memo cleared each round, CPU time: engine {eng:,.0f} requests/s")
        print(f"raw Hyperscan block scan of the same requests' bytes: {raw:,.0f} requests/s "
              f"({mbs:,.1f} MB/s)")
        print(f"engine/raw = {100.0 * eng / raw:.1f}%  (goals: >= 8,000 requests/s, >= 20%)")
        hot_path = hotpath.describe()
        print(f"detection hot path: {hot_path}")
        if hot_path.startswith("compiled"):
            pure = pure_throughput(paths, args.rules_dir)
            print(f"the same engine from its Python sources (child process): {pure:,.0f} "
                  f"requests/s; compiled/pure = {eng / pure:.2f}")
    return 0


def pure_throughput(paths: Sequence[Path], rules_dir: str | None) -> float:
    """Requests/s of the engine run from its Python sources, in a child process (a module
    is imported once per process: compiled here, from source there)."""
    argv = [sys.executable, __file__, PURE_FLAG, "--speed-only"]
    argv += [arg for p in paths for arg in ("--corpus", str(p))]
    argv += ["--rules-dir", rules_dir] if rules_dir else []
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
