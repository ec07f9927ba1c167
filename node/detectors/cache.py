"""On-disk cache of the compiled Hyperscan databases and of per-pattern verdicts.

Used by ``Engine.load`` (start of every processing worker): the databases are stored under
``<cache_dir>/hs-<pack hash>.bin`` (the hash covers every pack file, the engine and
Hyperscan versions and the disabled rules), so every worker after the first loads them in
milliseconds instead of compiling for seconds. ``verdicts.bin`` remembers which single
patterns compile (and the error of those that do not) across pack versions, so editing
one rule re-judges that rule only. Only the newest database files are kept (``prune``).
Writes are atomic (temp file + rename): workers starting
together never read half a file; a corrupt or foreign file is ignored (recompiled).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from node.detectors.pack import Verdicts
from node.detectors.prefilter import GROUPS, Databases

log = logging.getLogger(__name__)
FORMAT = 5
MAX_VERDICTS = 20000  # beyond it the verdict file starts over (bounded growth)
# Database files kept per cache directory, newest first: every rule edit or upgrade writes a
# new one (megabytes each). More than one, so two node versions sharing a data directory
# during a rolling upgrade do not delete each other's file and recompile in turn.
KEEP_DATABASES = 3
STALE_TMP_S = 3600.0  # a temp file this old was left by a writer that died mid-write


def db_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"hs-{key}.bin"


def read_databases(cache_dir: Path, key: str) -> tuple[Databases, Verdicts] | None:
    """The databases of pack hash ``key`` with the verdicts of their patterns (so a pattern
    compiled in prefilter mode is known as such even if ``verdicts.bin`` was lost)."""
    data = _read(db_path(cache_dir, key))
    if data is None:
        return None
    try:
        groups = tuple(tuple(g) for g in data["groups"])
        if len(groups) != len(GROUPS) or not all(isinstance(b, bytes) for g in groups for b in g):
            return None
        dbs = Databases(groups)
        verdicts = Verdicts((str(k), v if isinstance(v, str) else None)
                            for k, v in data["verdicts"].items())
    except (KeyError, TypeError, AttributeError):
        return None
    return dbs, verdicts


def write_databases(cache_dir: Path, key: str, dbs: Databases, verdicts: Verdicts) -> None:
    _write(db_path(cache_dir, key), {"format": FORMAT, "groups": [list(g) for g in dbs.groups],
                                     "verdicts": dict(verdicts)})
    prune(Path(cache_dir))


def prune(cache_dir: Path, keep: int = KEEP_DATABASES) -> list[Path]:
    """Delete all but the ``keep`` newest database files and stale temp files; returns what
    was deleted. Never raises (another worker may be pruning the same directory)."""
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    dbs = sorted(cache_dir.glob("hs-*.bin"), key=mtime, reverse=True)
    now = time.time()
    stale = [t for t in cache_dir.glob(".tmp-*") if now - mtime(t) > STALE_TMP_S]
    removed = []
    for path in dbs[keep:] + stale:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def read_verdicts(cache_dir: Path) -> Verdicts:
    data = _read(Path(cache_dir) / "verdicts.bin")
    verdicts = Verdicts()
    if data is not None and isinstance(data.get("verdicts"), dict):
        verdicts.update((str(k), v if isinstance(v, str) else None)
                        for k, v in data["verdicts"].items())
    return verdicts


def write_verdicts(cache_dir: Path, verdicts: Verdicts) -> None:
    items = dict(verdicts) if len(verdicts) <= MAX_VERDICTS else {}
    _write(Path(cache_dir) / "verdicts.bin", {"format": FORMAT, "verdicts": items})


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = msgpack.unpackb(path.read_bytes(), raw=False)
    except (OSError, ValueError, msgpack.UnpackException):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data


def _write(path: Path, doc: dict[str, Any]) -> None:
    blob = msgpack.packb(doc, use_bin_type=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the rule cache %s: %s", path, exc)
