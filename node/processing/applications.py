"""Application names for hits: which configured application a request's host belongs to.

``aggregation.applications`` maps a name to host glob patterns (``shop: ["shop.example",
"*.shop.example"]``); the first application whose pattern matches wins, in config order.
Without a match the host itself is the application (DESIGN.md "Attack"). Processing stamps the
name on each hit, so aggregation groups by it without knowing the patterns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from node.records import Text, as_text

CACHE_SIZE = 4096  # SECURITY: hosts are attacker-chosen; the memo must stay bounded


def normalize_host(host: Text) -> str:
    """Lower-case host without a trailing dot or ``:port`` (``[v6]:port`` keeps the brackets)."""
    text = as_text(host).strip().lower()
    if text.startswith("["):
        text = text.split("]", 1)[0] + "]"
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


class ApplicationMap:
    def __init__(self, applications: Mapping[str, Sequence[str]]) -> None:
        self._patterns = [(name, [p.lower() for p in patterns])
                          for name, patterns in applications.items()]
        self._memo: OrderedDict[str, str] = OrderedDict()

    def resolve(self, host: Text) -> str:
        """The application of ``host``; the normalized host when no pattern matches."""
        name = normalize_host(host)
        if not self._patterns:
            return name
        found = self._memo.get(name)
        if found is None:
            found = self._match(name)
            self._memo[name] = found
            if len(self._memo) > CACHE_SIZE:
                self._memo.popitem(last=False)
        return found

    def _match(self, host: str) -> str:
        for app, patterns in self._patterns:
            if any(fnmatchcase(host, pattern) for pattern in patterns):
                return app
        return host
