"""Confirmers: exact checks run after the Hyperscan prefilter, only on flagged values.

A rule names its confirmer (``confirm: sql``); the engine looks it up in ``CONFIRMERS``,
the one visible table (no registration by import side effect). A confirmer takes the
decoded value a rule flagged and answers whether it really is an attack of that kind.
"""

from __future__ import annotations

from collections.abc import Callable

from node.detectors.confirm import html, sql

Confirmer = Callable[[str], bool]

CONFIRMERS: dict[str, Confirmer] = {
    "sql": sql.confirm,
    "html": html.confirm,
}
