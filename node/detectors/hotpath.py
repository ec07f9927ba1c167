"""The detection hot path: the modules ``setup.py`` compiles with mypyc, and whether the
compiled code is the code on disk.

``points``, ``decode``, ``engine``, ``prefilter`` and ``confirm.sql`` are plain, type-hinted
Python that mypyc also builds as C extension modules (README, "Compiled hot path"). Python
imports an extension module in place of the ``.py`` file of the same name, so a source
edited after the build would silently not run. The build records the SHA-256 of every
source it compiled in ``hotpath-build.json`` beside this file, and ``activate`` (run when
``node.detectors`` is first imported, before any hot module) imports all of them from their
sources whenever the compiled modules do not match the sources, or some are missing.

All or nothing: compiled modules call one another directly in C, so a compiled engine
would keep calling a compiled ``decode`` even with ``decode.py`` loaded beside it.

Standard library only: ``setup.py`` loads this file on its own, where no dependency is
installed yet.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

HOT_PATH = ("node.detectors.points", "node.detectors.decode", "node.detectors.engine",
            "node.detectors.prefilter", "node.detectors.confirm.sql")
STAMP = "hotpath-build.json"  # {module name: SHA-256 of the source compiled}
HERE = Path(__file__).resolve().parent


def module_file(name: str, directory: Path, suffix: str) -> Path:
    """Where a hot module's file with ``suffix`` lies under ``directory`` (the directory of
    ``node.detectors``): node.detectors.confirm.sql -> confirm/sql<suffix>."""
    *parents, stem = name.split(".")[2:]
    return directory.joinpath(*parents, stem + suffix)


def source_of(name: str, directory: Path = HERE) -> Path:
    return module_file(name, directory, ".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_stamp(directory: Path = HERE) -> dict[str, str]:
    """The stamp a build writes: each hot module's source digest."""
    return {name: source_digest(source_of(name, directory)) for name in HOT_PATH}


def compiled_modules(directory: Path = HERE) -> list[str]:
    """The hot modules that have an extension module file in ``directory``."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return [name for name in HOT_PATH
            if any(module_file(name, directory, s).exists() for s in suffixes)]


def mismatched(directory: Path = HERE) -> list[str]:
    """The hot modules whose compiled form is missing or was built from another source
    than the ``.py`` beside it (a module installed without its source cannot be
    compared, and counts as matching)."""
    try:
        built = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        built = {}
    compiled = set(compiled_modules(directory))
    out = []
    for name in HOT_PATH:
        source = source_of(name, directory)
        if name not in compiled or (source.exists() and built.get(name) != source_digest(source)):
            out.append(name)
    return out


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the hot modules as their ``.py`` sources, ahead of the extension modules."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in HOT_PATH:
            return importlib.util.spec_from_file_location(fullname, source_of(fullname))
        return None


def use_sources() -> None:
    """Import the hot modules from their ``.py`` sources from now on (``activate`` does it
    for stale builds; benchmarks and tests, to compare). Only before they are imported."""
    imported = [name for name in HOT_PATH if name in sys.modules]
    if imported:
        raise RuntimeError(f"hot path modules already imported: {', '.join(imported)}")
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


def activate() -> None:
    """The compiled hot path when all of it is built from the sources on disk, else the
    sources (nothing to do where nothing is compiled: Python imports the sources)."""
    if compiled_modules() and mismatched():
        use_sources()


def describe() -> str:
    """How the imported hot path runs: "compiled (mypyc)", or "pure Python" and why."""
    files = [str(getattr(sys.modules.get(name), "__file__", "")) for name in HOT_PATH]
    if all(f and not f.endswith(".py") for f in files):
        return "compiled (mypyc)"
    if not compiled_modules():
        return "pure Python (not compiled at install)"
    stale = mismatched()
    if stale:
        return (f"pure Python: the compiled modules do not match their sources "
                f"({', '.join(stale)}); `pip install -e .` rebuilds them")
    return "pure Python (asked for)"
