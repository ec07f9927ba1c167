"""``oob-node rules test``: the per-rule table and the exit status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from detect_helpers import rule

from node.config import build_config
from node.detectors import pack as pack_module
from node.detectors.cli import main


def run(tmp_path: Path, rules: list[dict]) -> tuple[int, str]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "sqli.yaml").write_text(yaml.safe_dump({"class": "sqli", "rules": rules}))
    cfg = build_config(None, env={}, overrides={"data_dir": str(tmp_path / "data"),
                                                "detection.rules_dir": str(rules_dir)})
    out = io.StringIO()
    return main(cfg, None, out), out.getvalue()


@pytest.fixture(autouse=True)
def no_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(pack_module, "BUILTIN_DIR", tmp_path / "empty")


GOOD = rule("sqli-union", [r"union\s+select"], match=["1 union select 2"],
            examples={"match": ["1 union select 2"], "no_match": ["union station"]})


def test_all_pass(tmp_path: Path) -> None:
    code, out = run(tmp_path, [GOOD])
    assert code == 0
    assert "sqli-union" in out and "1 rules: 1 loaded, 0 failed to load, 0 with failures" in out


def test_failed_example_and_bad_rule(tmp_path: Path) -> None:
    wrong = rule("sqli-wrong", ["select"], examples={"match": ["nothing here"],
                                                     "no_match": ["select"]})
    bad = rule("sqli-bad", ["(oops"])
    code, out = run(tmp_path, [GOOD, wrong, bad])
    assert code == 1
    assert "FAIL sqli-wrong: match example not matched: [args:q] 'nothing here'" in out
    assert "FAIL sqli-wrong: no_match example matched" in out
    assert "FAIL sqli-bad: patterns[0]: Hyperscan" in out
    row = next(line for line in out.splitlines() if line.startswith("sqli-union"))
    assert row.split()[2:] == ["loaded", "3", "0"]
