"""The compiled hot path (setup.py, node/detectors/hotpath.py): built from the sources on
disk, finding exactly what the sources find, and never run once a source changed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hotpath_probe import findings

from node.detectors import hotpath
from node.detectors.engine import Engine

EXT = importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's, as a build names them


def fake_build(directory: Path, compiled: tuple[str, ...] = hotpath.HOT_PATH) -> None:
    """Sources, extension module files and a stamp, as a build leaves them."""
    for name in hotpath.HOT_PATH:
        hotpath.source_of(name, directory).parent.mkdir(exist_ok=True)
        hotpath.source_of(name, directory).write_text(f"# {name}\n")
    for name in compiled:
        hotpath.module_file(name, directory, EXT).write_bytes(b"\x7fELF")
    (directory / hotpath.STAMP).write_text(json.dumps(hotpath.build_stamp(directory)))


def test_a_source_edited_after_the_build_is_a_mismatch(tmp_path: Path) -> None:
    fake_build(tmp_path)
    assert hotpath.compiled_modules(tmp_path) == list(hotpath.HOT_PATH)
    assert hotpath.mismatched(tmp_path) == []
    hotpath.source_of("node.detectors.decode", tmp_path).write_text("# edited\n")
    assert hotpath.mismatched(tmp_path) == ["node.detectors.decode"]


def test_a_partial_build_or_a_missing_stamp_is_a_mismatch(tmp_path: Path) -> None:
    fake_build(tmp_path, compiled=("node.detectors.points",))
    assert hotpath.mismatched(tmp_path) == list(hotpath.HOT_PATH[1:])
    fake_build(tmp_path)
    (tmp_path / hotpath.STAMP).unlink()
    assert hotpath.mismatched(tmp_path) == list(hotpath.HOT_PATH)


def test_nothing_compiled_means_the_sources() -> None:
    if hotpath.compiled_modules():
        pytest.skip("this install has the compiled hot path")
    assert hotpath.describe().startswith("pure Python")


def test_the_installed_hot_path_is_built_from_these_sources() -> None:
    """The suite must test what ships: the compiled modules, built from the sources on
    disk (scripts/test.sh reinstalls before every run; after editing a hot module, run it
    or `pip install -e .`)."""
    if not hotpath.compiled_modules():
        pytest.skip("installed without the compiled hot path (no C compiler?)")
    assert hotpath.mismatched() == []
    assert hotpath.describe() == "compiled (mypyc)"


def test_compiled_and_pure_engines_find_the_same(full_engine: Engine,
                                                 engine_cache: Path) -> None:
    if hotpath.describe() != "compiled (mypyc)":
        pytest.skip("the hot path is not compiled here: nothing to compare")
    probe = Path(__file__).with_name("hotpath_probe.py")
    out = subprocess.run([sys.executable, str(probe), str(engine_cache), "--pure-python"],
                         check=True, capture_output=True, timeout=600).stdout
    pure = orjson.loads(out)
    assert pure.pop("hot_path") == "pure Python (asked for)"
    errors_before = full_engine.stats.errors
    compiled = orjson.loads(orjson.dumps(findings(full_engine)))
    compiled["errors"] -= errors_before
    assert sum(map(len, compiled["hits"])) > 100  # the corpus does find attacks
    assert compiled["examples"] == pure["examples"]
    assert compiled["hits"] == pure["hits"]
    assert compiled["errors"] == pure["errors"] == 0


def test_an_edited_hot_module_runs_as_written(tmp_path: Path) -> None:
    """A copy of the installed package, one hot module edited after the build: every hot
    module then imports from its source (all or nothing), and says why."""
    if not hotpath.compiled_modules():
        pytest.skip("installed without the compiled hot path")
    import node

    shutil.copytree(Path(node.__file__).parent, tmp_path / "node",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shared = importlib.util.find_spec("oob_node__mypyc")
    assert shared is not None and shared.origin is not None
    shutil.copy(shared.origin, tmp_path)
    show = ("import node.detectors.engine as e, node.detectors.hotpath as h; "
            "print(e.__file__); print(h.describe())")

    def run() -> list[str]:
        return subprocess.run([sys.executable, "-c", show], cwd=tmp_path, check=True,
                              capture_output=True, text=True, timeout=120).stdout.splitlines()

    where, how = run()
    assert where.startswith(str(tmp_path)) and not where.endswith(".py") and how.startswith(
        "compiled")
    with (tmp_path / "node" / "detectors" / "decode.py").open("a") as fh:
        fh.write("\nEDITED = True\n")
    where, how = run()
    assert where == str(tmp_path / "node" / "detectors" / "engine.py")
    assert "do not match their sources (node.detectors.decode)" in how
