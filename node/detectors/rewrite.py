"""Rewrites of rule patterns for the scan databases that keep "does it match" unchanged.

Used by ``prefilter.py`` when compiling. Hyperscan reports a match at every position where
one can end: a pattern ending in ``[^;]+`` reports once per following byte, and every report
is a Python callback. The scan only needs to know *whether* (and roughly where) a pattern
matches, so a final ``X+`` (or ``X{n,}``, ``X{n,m}``) of each top-level alternative is cut to
``X{n}``: R·X+ matches somewhere exactly when R·X does. ``\\A``/``\\z`` become ``^``/``$`` for
the joined buffer (see the prefilter module docstring).
"""

from __future__ import annotations

import re

_TAIL = re.compile(r"(\+|\{(\d+),\d*\})[?+]?$")


_ANCHOR_FORMS = {"^": r"(?:^|\x00)", "$": r"(?:$|\x00)", "\\A": r"(?:\A|\x00)",
                 "\\z": r"(?:\z|\x00)", "\\Z": r"(?:\Z|\x00)"}


def joined_anchors(regex: str) -> str:
    r"""Each anchor (``^``, ``$``, ``\A``, ``\z``, ``\Z`` outside classes and ``\Q..\E``)
    also accepts the NUL separator of the joined buffer: ``^`` -> ``(?:^|\x00)``."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(regex):
        c, pair = regex[i], regex[i:i + 2]
        if pair == "\\Q":
            end = regex.find("\\E", i)
            end = len(regex) if end < 0 else end + 2
            out.append(regex[i:end])
            i = end
            continue
        if c == "\\":
            out.append(_ANCHOR_FORMS.get(pair, pair) if not in_class else pair)
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            lead = 2 if regex[i + 1:i + 3] == "^]" else (1 if regex[i + 1:i + 2] in "^]" else 0)
            out.append(regex[i:i + 1 + lead])
            i += 1 + lead
            continue
        elif c in "^$":
            c = _ANCHOR_FORMS[c]
        out.append(c)
        i += 1
    return "".join(out)


def has_anchor(regex: str) -> bool:
    return joined_anchors(regex) != regex


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


# Constructs that may match a NUL byte (the middle of the joined buffer's separator
# "\n\x00\n"). Over-inclusive on purpose: a false "may cross" only costs one rescan of the
# value. Negated classes and POSIX classes, \S \W \D and friends, escapes of code points,
# and "." (unless escaped). \s, \w, \d, literals and positive classes cannot.
_CROSSING = re.compile(r"\\[SWDHVNXCRpPQ0-7xcueEK]|\[\^|\[:|\x00")


def may_cross(regex: str) -> bool:
    """True unless the pattern surely cannot match a NUL byte: then none of its matches can
    span the separator, and a match ending inside a value lies wholly inside it. (A regex
    escape is looked for at every backslash, so an escaped backslash only errs to True.)"""
    if _CROSSING.search(regex):
        return True
    return any(c == "." and not _escaped(regex, i) for i, c in enumerate(regex))


def scan_regex(regex: str) -> str:
    """The form a pattern is compiled in for the scan databases."""
    return trim_tails(joined_anchors(regex))
