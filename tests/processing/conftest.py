"""Fixtures of the processing tests: the real detection engine, compiled once and cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from node.config import NodeConfig, build_config
from node.detectors.engine import Engine


@pytest.fixture(scope="session")
def engine_cache(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hyperscan cache directory holding the default rule set's compiled database.

    It lives in pytest's cache directory, so the (slow) compile happens once per rule-pack
    change, not once per run; the engine keys its cache files by the pack hash, so a stale
    file is never used.
    """
    store = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if store is not None:
        cache = Path(store.mkdir("oob-engine-cache"))
    else:
        cache = tmp_path_factory.mktemp("oob-engine-cache")
    Engine.load(build_config(None, env={}).detection, cache)
    return cache


@pytest.fixture(scope="session")
def engine(engine_cache: Path) -> Engine:
    """The real engine with the default rule set, loaded from the cache."""
    return Engine.load(build_config(None, env={}).detection, engine_cache)


@pytest.fixture
def seed_cache(engine_cache: Path):
    """Copy the compiled database into ``<data_dir>/cache`` so worker processes load it."""

    def seed(cfg: NodeConfig) -> NodeConfig:
        target = Path(cfg.data_dir) / "cache"
        shutil.copytree(engine_cache, target, dirs_exist_ok=True)
        return cfg

    return seed
