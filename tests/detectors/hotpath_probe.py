"""What the full engine finds on the test corpus, hostile requests and every rule example.

Imported by ``test_hotpath.py`` (the engine as installed: compiled) and run as a script in
a child process with ``--pure-python`` (the same engine from its Python sources), so the
two can be compared:

    python tests/detectors/hotpath_probe.py CACHE_DIR [--pure-python]  # JSON on stdout
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_QUERIES = [
    "q=" + "union%20select%20" * 6000,
    "&".join(f"a{i}=<script>" for i in range(2000)),
    "q=" + "VkZaU1NtVkZNVVZTVkVKYVRXcEZkMVJ1Y0ZwbGJVcFZWVmhzVGxKRlJqST0=" * 100,
    "q=%u0027%c0%af..%c0%af%ff%fe%00%E2%80%A8<sc\\x72ipt>",
]


def findings(engine: Any) -> dict[str, Any]:
    from node.corpus import read_cases, to_record

    records = [to_record(c) for f in sorted((ROOT / "tests" / "data").glob("*.jsonl"))
               for c in read_cases(f)]
    base = records[0]
    records += [{**base, "id": f"hostile-{i}", "query": q} for i, q in enumerate(HOSTILE_QUERIES)]
    records.append({**base, "id": "invalid-utf8", "path": bytes(range(256)) * 10,
                    "query": bytes(range(256)) * 10})
    examples = [(ex.value, ex.point, ex.name) for rule in engine.rules
                for ex in (*rule.match, *rule.no_match)]
    return {
        "hits": [engine.analyze(r) for r in records],
        "examples": [sorted(engine.match_value(*ex)) for ex in examples],
        "errors": engine.stats.errors,
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    if "--pure-python" in sys.argv:
        from node.detectors import hotpath

        hotpath.use_sources()
    import orjson

    from node.config import DetectionConfig
    from node.detectors import hotpath
    from node.detectors.engine import Engine

    engine = Engine.load(DetectionConfig(), Path(sys.argv[1]), time_budget_ms=60_000.0)
    result = findings(engine)
    result["hot_path"] = hotpath.describe()
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
