"""Hyperscan prefilter: which (pattern, value) pairs are worth a closer look.

GUARANTEE: the prefilter may only over-approximate. Every (pattern, value) pair whose
pattern matches inside that value alone must come out of ``scan``; extra pairs only cost
time. A bug here may cost speed, never a missed attack. ``tests/detectors`` checks it on
every rule example (``Engine.match_value(..., prefilter_only=True)`` must contain what the
full engine matches) and on values built to straddle the separator.

Third stage of detection, after ``points.py`` and ``decode.py``; ``engine.py`` filters the
pairs by point kind and confirms them. Lifecycle as in Suricata's ``util-mpm-hs.c``: the
databases are compiled once per process (or loaded from the on-disk cache keyed by the
pack hash), one scratch each per process, match callbacks only record offsets.

Scan groups: values are scanned by the database of their group (``GROUPS``: the method,
everything else), holding only the patterns of rules that apply there, so a rule written
for the method (``[^A-Z]``) never fires on every byte of a body.

How the over-approximation holds with one buffer per group and request: the values are
joined with ``SEP`` (a NUL byte) and scanned once. Anchors are rewritten to also accept the
separator (``^`` -> ``(?:^|\\x00)``, ``rewrite.joined_anchors``), so a pattern matching
inside a value alone also matches in the buffer, ending inside that value (or, for a final
``$``, on the separator right after it). A pattern that cannot match a NUL byte
(``rewrite.may_cross``: no ``.``, ``[^x]``, ``\\S``, escapes of code points...) cannot span
a separator: its match lies wholly inside the value where it ends and is attributed
directly. Any other match may span one: the value where it ends is rescanned alone, which
decides. Anchored patterns are finally checked with their exact form and flags (the
*anchored* database), since a value may itself contain a NUL. Too many matches in a joined
scan (a hostile request) abandon it and rescan every value.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import hyperscan

from node.detectors.pack import KIND_BIT, Pattern
from node.detectors.rewrite import has_anchor, joined_anchors, may_cross, trim_tails

SEP = b"\x00"  # \s, \w, \d, literals and positive classes cannot match it
MAX_JOINED_MATCHES = 4096  # matches recorded from one joined scan before giving up on it
FRAGMENT_WINDOW = 96  # bytes before a match's end shown as its fragment

# Every kind but the method shares one database (one compile, one joined scan): the method
# is a closed vocabulary whose rules (``[^A-Z]``) would fire on every byte of other values.
GROUPS: tuple[tuple[str, int], ...] = (
    ("request", sum(KIND_BIT.values()) & ~KIND_BIT["method"]),
    ("method", KIND_BIT["method"]),
)


def group_of(mask: int) -> int:
    """Scan group of a point (its kinds never straddle two groups)."""
    for i, (_, bits) in enumerate(GROUPS):
        if mask & bits:
            return i
    return 0


@dataclass(frozen=True)
class Databases:
    groups: tuple[bytes, ...]  # serialized database per GROUPS entry, b"" when no pattern
    anchored: bytes  # exact-flag SINGLEMATCH database of the anchored patterns


def _compile(exprs: Sequence[str], flags: Sequence[int], ids: Sequence[int]) -> bytes:
    if not exprs:
        return b""
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[e.encode("utf-8") for e in exprs], ids=list(ids),
               elements=len(exprs), flags=list(flags))
    return hyperscan.dumpb(db)


def compile_databases(patterns: Sequence[Pattern], masks: Sequence[int]) -> Databases:
    """Compile the group databases and the anchored one (slow: seconds for a full rule set;
    the engine caches the result). ``masks[i]`` is the point mask of pattern i's rule."""
    groups = []
    for _, bits in GROUPS:
        ids = [i for i, m in enumerate(masks) if m & bits]
        groups.append(_compile([trim_tails(joined_anchors(patterns[i].regex)) for i in ids],
                               [patterns[i].hs_flags for i in ids], ids))
    anchored = [i for i, p in enumerate(patterns) if has_anchor(p.regex)]
    return Databases(tuple(groups), _compile(
        [trim_tails(patterns[i].regex) for i in anchored],
        [patterns[i].hs_flags | hyperscan.HS_FLAG_SINGLEMATCH for i in anchored], anchored))


class _Db:
    """A loaded database with its scratch (one per process)."""

    __slots__ = ("db", "scratch")

    def __init__(self, blob: bytes) -> None:
        self.db = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK)
        self.scratch = hyperscan.Scratch(self.db)


def _load(blob: bytes) -> _Db | None:
    return _Db(blob) if blob else None


Found = dict[int, int]  # pattern id -> end of its first match in the value


class Prefilter:
    """The loaded databases; one instance per process."""

    def __init__(self, dbs: Databases, patterns: Sequence[Pattern]) -> None:
        self.groups: list[_Db | None] = [_load(b) for b in dbs.groups]
        self._anchored = _load(dbs.anchored)
        self.anchored_ids = frozenset(i for i, p in enumerate(patterns) if has_anchor(p.regex))
        # Patterns whose joined matches need no rescan: they cannot span a separator.
        self._contained = [not may_cross(joined_anchors(p.regex)) for p in patterns]

    def scan(self, group: int, segments: Sequence[bytes]) -> list[tuple[int, Found]]:
        """(segment index, {pattern id: end of its first match in the segment}) for every
        segment of this group where some pattern of the group matches inside it alone."""
        db = self.groups[group] if segments else None
        if db is None:
            return []
        if len(segments) == 1:
            found_by_seg, rescan = {}, {0}  # the joined scan would be the rescan
        else:
            found_by_seg, rescan = self._joined(db, segments)
        for seg in rescan:
            found_by_seg[seg] = self._alone(db, segments[seg])
        out = []
        for seg, found in sorted(found_by_seg.items()):
            if found and self.anchored_ids:
                self._exact_anchors(segments[seg], found)
            if found:
                out.append((seg, found))
        return out

    def _joined(self, db: _Db, segments: Sequence[bytes]) -> tuple[dict[int, Found], set[int]]:
        """One scan of all segments: matches that cannot span a separator are attributed
        directly; a segment where another match ends (or, for an anchored pattern, before
        the separator where it ends) is rescanned alone."""
        matches: list[tuple[int, int]] = []

        def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> bool:
            matches.append((pid, to))
            return len(matches) >= MAX_JOINED_MATCHES

        try:
            db.db.scan(SEP.join(segments), match_event_handler=on_match, scratch=db.scratch)
        except hyperscan.ScanTerminated:
            return {}, set(range(len(segments)))
        found_by_seg: dict[int, Found] = {}
        rescan: set[int] = set()
        if not matches:
            return found_by_seg, rescan
        starts = list(accumulate((len(s) + len(SEP) for s in segments[:-1]), initial=0))
        contained, anchored = self._contained, self.anchored_ids
        for pid, end in matches:
            seg = bisect.bisect_right(starts, end - 1) - 1
            if end > starts[seg] + len(segments[seg]):  # the match ends on the separator
                if pid in anchored:
                    rescan.add(seg)  # "x$" matched at the end of this value
            elif contained[pid]:
                found_by_seg.setdefault(seg, {}).setdefault(pid, end - starts[seg])
            else:
                rescan.add(seg)
        return found_by_seg, rescan

    @staticmethod
    def _alone(db: _Db, segment: bytes) -> Found:
        found: Found = {}

        def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> bool:
            if pid not in found:
                found[pid] = to
            return len(found) >= MAX_JOINED_MATCHES

        try:
            db.db.scan(segment, match_event_handler=on_match, scratch=db.scratch)
        except hyperscan.ScanTerminated:
            pass
        return found

    def _exact_anchors(self, segment: bytes, found: Found) -> None:
        """Drop anchored patterns that only matched thanks to a NUL inside the value."""
        anchored = [pid for pid in found if pid in self.anchored_ids]
        if not anchored or self._anchored is None:
            return
        exact = self._alone(self._anchored, segment)
        for pid in anchored:
            if pid not in exact:
                del found[pid]

    @staticmethod
    def span(end: int) -> tuple[int, int]:
        """Bytes shown as a match's fragment: a window ending where the match ends (no
        start-of-match tracking: SOM databases cost several times the compile time)."""
        return max(0, end - FRAGMENT_WINDOW), end
