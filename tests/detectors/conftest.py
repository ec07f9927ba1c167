"""Fixtures of the detection tests: the full engine (built-in packs) compiled once per
session into a shared cache, and small engines over packs written by a test."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.config import DetectionConfig
from node.detectors import pack as pack_module
from node.detectors.engine import Engine

sys.path.insert(0, str(Path(__file__).parent))  # detect_helpers


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Hyperscan cache directory for the whole session (compiling costs seconds)."""
    return tmp_path_factory.mktemp("hs-cache")


@pytest.fixture(scope="session")
def full_engine(engine_cache: Path) -> Engine:
    """The engine over the built-in rule packs, as a processing worker loads it."""
    return Engine.load(DetectionConfig(), engine_cache, time_budget_ms=1000.0)


PackSpec = dict[str, list[dict[str, Any]]]  # class -> rules


@pytest.fixture
def make_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Callable[..., Engine]:
    """An engine over only the packs given (``{class: [rule, ...]}``), built-in packs
    hidden, with its own cache directory."""
    builtin = tmp_path / "no-builtin"
    builtin.mkdir()
    monkeypatch.setattr(pack_module, "BUILTIN_DIR", builtin)

    def make(packs: PackSpec, cache: Path | None = None, **cfg: Any) -> Engine:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(exist_ok=True)
        for cls, rules in packs.items():
            (rules_dir / f"{cls}.yaml").write_text(yaml.safe_dump({"class": cls,
                                                                   "rules": rules}))
        budget = cfg.pop("time_budget_ms", 1000.0)
        return Engine.load(DetectionConfig(rules_dir=str(rules_dir), **cfg),
                           cache or tmp_path / "cache", time_budget_ms=budget)

    return make
