"""Rewrites of rule patterns for the scan databases that keep "does it match" unchanged.

Used by ``prefilter.py`` when compiling. The scan only needs to know *whether* (and roughly
where) a pattern matches, so a final ``X+`` (or ``X{n,}``, ``X{n,m}``) of each top-level
alternative is cut to ``X{n}``: R·X+ matches somewhere exactly when R·X does, and its
first match (the one ``HS_FLAG_SINGLEMATCH`` reports) ends at the same place.
"""

from __future__ import annotations

import re

_TAIL = re.compile(r"(\+|\{(\d+),\d*\})[?+]?$")


def top_level_alternatives(regex: str) -> list[str]:
    """Split at ``|`` outside groups and classes (escapes respected)."""
    parts: list[str] = []
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            # a "]" right after "[" or "[^" is a literal, not the end of the class
            i += 1 if regex[i + 1:i + 2] == "]" else (2 if regex[i + 1:i + 3] == "^]" else 0)
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif c == "|" and depth == 0:
            parts.append(regex[start:i])
            start = i + 1
        i += 1
    parts.append(regex[start:])
    return parts


def _escaped(text: str, pos: int) -> bool:
    """True when the character at ``pos`` is escaped by an odd run of backslashes."""
    run = 0
    while pos - 1 - run >= 0 and text[pos - 1 - run] == "\\":
        run += 1
    return run % 2 == 1


def _trim(alt: str) -> str:
    m = _TAIL.search(alt)
    if m is None or m.start() == 0 or _escaped(alt, m.start()):
        return alt
    before = alt[:m.start()]
    if before.endswith(("(", "|")):
        return alt
    if before[-1:] in "*+?}" and not _escaped(before, len(before) - 1):
        return alt  # an already quantified atom: leave it
    n = int(m.group(2)) if m.group(2) else 1
    if n == 0:
        return alt
    return before if n == 1 else f"{before}{{{n}}}"


def trim_tails(regex: str) -> str:
    """Each top-level alternative's final ``X+``/``X{n,}``/``X{n,m}`` cut to ``X{n}``."""
    parts = top_level_alternatives(regex)
    if any(p == "" for p in parts):
        return regex  # an empty alternative: leave the pattern alone
    return "|".join(_trim(p) for p in parts)


def scan_regex(regex: str) -> str:
    """The form a pattern is compiled in for the scan databases."""
    return trim_tails(regex)
