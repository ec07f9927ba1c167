"""Hyperscan prefilter: which (pattern, value) pairs are worth a closer look.

GUARANTEE: the prefilter may only over-approximate. Every (pattern, value) pair whose
pattern matches inside that value alone must come out of ``scan``; extra pairs only cost
time. A bug here may cost speed, never a missed attack. ``tests/detectors`` checks it on
every rule example (``Engine.match_value(..., prefilter_only=True)`` must contain what the
full engine matches) and on values built to straddle value boundaries.

Third stage of detection, after ``points.py`` and ``decode.py``; ``engine.py`` filters the
pairs by point kind and confirms them. Lifecycle as in Suricata's ``util-mpm-hs.c``: the
databases are compiled once per process (or loaded from the on-disk cache keyed by the
pack hash), one scratch each per process, match callbacks only record offsets.

How the guarantee holds: each value is scanned alone, with the patterns in their exact form
and flags plus ``HS_FLAG_SINGLEMATCH`` (at most one callback per pattern and value, so a
hostile value cannot flood the callback), the only rewrite being ``rewrite.scan_regex``,
which keeps "does it match" unchanged. (An earlier design joined a request's values with a
NUL byte and scanned once; the anchor rewrites, rescans and callbacks on every separator
made it slower than one call per value.)

Scan groups: a value is scanned by the databases of the first group of ``GROUPS`` whose
kinds cover all of its point kinds; a group holds the patterns of every rule that applies
to at least one kind of the points routed to it (``group_kinds``, from the masks
``points.POINT_MASKS`` lists), so it holds every pattern that applies to the value (in one
or more shards, see ``SHARD_MAX_PATTERNS``). A whole XML document (``body``) meets only the
body rules, a vocabulary header (``accept``: ``all_headers``) only the ~70 all-header
patterns instead of all ~450, and a rule written for the method (``[^A-Z]``) never fires on
a body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import hyperscan

from node.detectors.pack import KIND_BIT, Pattern
from node.detectors.points import POINT_MASKS
from node.detectors.rewrite import scan_regex

FRAGMENT_WINDOW: Final = 96  # bytes before a match's end shown as its fragment
ALL_KINDS: Final = sum(KIND_BIT.values())

# Most specific first; the last one takes every point.
GROUPS: Final[tuple[tuple[str, int], ...]] = (
    ("method", KIND_BIT["method"]),
    ("body", KIND_BIT["body"]),
    ("all_headers", KIND_BIT["all_headers"]),
    ("request", ALL_KINDS),
)


def group_of(mask: int) -> int:
    """Scan group of a point: the first whose kinds include all of the point's."""
    for i, (_, bits) in enumerate(GROUPS):
        if not mask & ~bits:
            return i
    return len(GROUPS) - 1


def group_kinds(group: int) -> int:
    """The kinds of the points this group scans: the union of every point mask routed to it.
    A group only holds patterns of rules that apply to one of them (the "request" group
    would otherwise also hold method-only patterns, which match nearly any value, so every
    value scanned paid a match callback and a flag for nothing)."""
    kinds = 0
    for mask in POINT_MASKS:
        if group_of(mask) == group:
            kinds |= mask
    return kinds


# Hyperscan's compile time grows faster than the pattern count, its scan time slower: a group
# of more patterns than this is compiled as several databases ("shards", consecutive
# patterns, so a class stays together). The request group (~550 patterns) is one database:
# it compiles in ~21 s instead of the ~12 s of three shards, once per rule change (the cache
# keeps it), and the engine then runs on 0.93 of the CPU the three shards took.
SHARD_MAX_PATTERNS: Final = 1024


@dataclass(frozen=True)
class Databases:
    groups: tuple[tuple[bytes, ...], ...]  # per GROUPS entry, its serialized shards


_Job = tuple[list[str], list[int], list[int]]  # (expressions, flags, ids) of one database


def _compile(job: _Job) -> bytes:
    exprs, flags, ids = job
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[e.encode("utf-8") for e in exprs], ids=ids,
               elements=len(exprs), flags=flags)
    return hyperscan.dumpb(db)


def scan_flags(pattern: Pattern) -> int:
    """The flags a pattern is compiled with for the scan databases."""
    return pattern.hs_flags | hyperscan.HS_FLAG_SINGLEMATCH


def shards(ids: list[int]) -> list[list[int]]:
    """``ids`` cut into consecutive runs of equal size, none over SHARD_MAX_PATTERNS."""
    count = -(-len(ids) // SHARD_MAX_PATTERNS)
    return [ids[k * len(ids) // count:(k + 1) * len(ids) // count] for k in range(count)]


def compile_databases(patterns: Sequence[Pattern], masks: Sequence[int]) -> Databases:
    """Compile the shards of every group (slow: seconds for a full rule set; the engine
    caches the result). ``masks[i]`` is the point mask of pattern i's rule."""
    groups = []
    for g in range(len(GROUPS)):
        ids = [i for i, m in enumerate(masks) if m & group_kinds(g)]
        groups.append(tuple(_compile(([scan_regex(patterns[i].regex) for i in shard],
                                      [scan_flags(patterns[i]) for i in shard], shard))
                            for shard in shards(ids)))
    return Databases(tuple(groups))


class _Db:
    """A loaded database with its scratch (one per process)."""

    __slots__ = ("db", "scratch")

    def __init__(self, blob: bytes) -> None:
        self.db = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK)
        self.scratch = hyperscan.Scratch(self.db)


Found = dict[int, int]  # pattern id -> end of its first match in the value


class Prefilter:
    """The loaded databases; one instance per process."""

    def __init__(self, dbs: Databases) -> None:
        self.groups: list[list[_Db]] = [[_Db(b) for b in group] for group in dbs.groups]

    def scan(self, group: int, segments: Sequence[bytes]) -> list[tuple[int, Found]]:
        """(segment index, {pattern id: end of its first match in the segment}) for every
        segment of this group where some pattern of the group matches, by segment index."""
        found_by_seg: dict[int, Found] = {}
        found: Found = {}

        def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            found[pid] = to  # SINGLEMATCH: once per pattern, at its first match

        for db in self.groups[group]:
            scan, scratch = db.db.scan, db.scratch
            for j, segment in enumerate(segments):
                # Positional arguments: keywords cost the binding twice the call itself.
                scan(segment, on_match, 0, None, scratch)
                if found:
                    found_by_seg.setdefault(j, {}).update(found)
                    found.clear()
        return sorted(found_by_seg.items())

    @staticmethod
    def span(end: int) -> tuple[int, int]:
        """Bytes shown as a match's fragment: a window ending where the match ends (no
        start-of-match tracking: SOM databases cost several times the compile time)."""
        return max(0, end - FRAGMENT_WINDOW), end
