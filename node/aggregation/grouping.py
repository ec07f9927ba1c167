"""Hits into attacks: the pure half of aggregation (no I/O; ``store`` loads and saves).

An attack is every hit of one ``class`` from one ``client_ip`` against one ``host`` and
``application`` with no gap longer than ``attack_window_s`` between consecutive hits; a hit
after a longer gap opens a new attack for the same group (DESIGN.md "Attack").

Duplicates: a request seen twice (the mirror copy and the Lua record of the same request)
yields the same hits twice, from different sources. Each hit has a *pair key*: its request key
(Envoy's ``x-request-id``; else a ``fingerprint`` field if processing sends one; else a digest
of client, method, host, path, rule, point and fragment, the parts of the URL and body a hit
carries), its rule and its point. The store counts, per pair key and source, how many hits
arrived; the n-th hit of a source is a duplicate when another source already delivered n of
them. So each real request counts once, repeated identical requests still count each time,
and a duplicate only adds its source (and its response status, which only the Lua record
knows) to the attack and to the matching sample hit.

Top paths and points are kept with the Space-Saving algorithm: at most ``4 * top_n`` counters
per attack, exact while fewer distinct values were seen, an upper-bound estimate beyond.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from node.aggregation.outcome import attack_outcome, hit_verdict, public_outcome
from node.config import AggregationConfig
from node.records import ATTACK_STATUS

COUNTER_FACTOR = 4  # counters kept per top-N list, as a multiple of top_n
MAX_RULE_IDS = 100
MAX_SOURCES = 8

Attack = dict[str, Any]  # records.Attack plus "_"-prefixed internal state (never served)


@dataclass(frozen=True, slots=True)
class GroupingParams:
    window_s: float = 900.0
    top_n: int = 10
    sample_hits: int = 20

    @classmethod
    def from_config(cls, cfg: AggregationConfig) -> GroupingParams:
        return cls(cfg.attack_window_s, cfg.top_n, cfg.sample_hits)


@dataclass(frozen=True, slots=True)
class Item:
    """One hit ready to apply: its group, pair key, redacted sample and duplicate verdict."""

    group: str
    pair: str
    sample: dict[str, Any]
    duplicate: bool = False


@dataclass(slots=True)
class BatchResult:
    attacks: dict[str, Attack] = field(default_factory=dict)  # id -> changed attack
    created: list[str] = field(default_factory=list)
    pointers: dict[str, str] = field(default_factory=dict)  # group -> open attack id
    hits_before: dict[str, int] = field(default_factory=dict)  # id -> hits before the batch
    assigned: dict[str, str] = field(default_factory=dict)  # hit id -> attack id


def _digest(*parts: Any, size: int = 16) -> str:
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def group_of(hit: dict[str, Any]) -> str:
    """The group digest (class, client_ip, host, application; the host when no application).
    A digest, so attacker-chosen hosts never appear in Redis key names."""
    host = str(hit.get("host") or "")
    return _digest(hit.get("class"), hit.get("client_ip"), host,
                   hit.get("application") or host)


def request_key(hit: dict[str, Any]) -> str:
    """What identifies one request across sources (see the module docstring)."""
    if hit.get("request_id"):
        return "rid:" + str(hit["request_id"])
    if hit.get("fingerprint"):
        return "fp:" + str(hit["fingerprint"])
    return "hit:" + _digest(hit.get("client_ip"), hit.get("method"), hit.get("host"),
                            hit.get("path"), hit.get("fragment"))


def pair_of(hit: dict[str, Any]) -> str:
    return _digest(request_key(hit), hit.get("rule_id"), *(hit.get("point") or []))


def point_text(point: list[Any]) -> str:
    return ".".join(str(p) for p in point)


def attack_id(group: str, first_hit_id: str) -> str:
    return _digest(group, first_hit_id, size=8)


def new_attack(group: str, sample: dict[str, Any]) -> Attack:
    ts = float(sample.get("ts") or 0.0)
    host = str(sample.get("host") or "")
    return {
        "id": attack_id(group, str(sample.get("id"))), "class": sample.get("class", ""),
        "client_ip": sample.get("client_ip", ""), "host": host,
        "application": sample.get("application") or host,
        "first_seen": ts, "last_seen": ts, "hits": 0, "paths": [], "points": [],
        "rule_ids": [], "sources": [], "sample_hits": [], "status": ATTACK_STATUS,
        "outcome": "unknown", "_group": group, "_paths": {}, "_points": {}, "_verdicts": {},
    }


def hit_ts(hit: dict[str, Any]) -> float:
    """The order hits are paired and counted in (the store sorts a batch by it first)."""
    return float(hit.get("ts") or 0.0)


def belongs(attack: Attack, ts: float, window_s: float) -> bool:
    """True when a hit at ``ts`` is within the window of the attack's span (late hits too)."""
    return attack["first_seen"] - window_s <= ts <= attack["last_seen"] + window_s


def bump(counts: dict[str, int], key: str, cap: int) -> None:
    """Space-Saving: count ``key``; when full, the smallest counter is replaced (min + 1)."""
    if key in counts or len(counts) < cap:
        counts[key] = counts.get(key, 0) + 1
        return
    smallest = min(counts, key=counts.__getitem__)
    counts[key] = counts.pop(smallest) + 1


def top(counts: dict[str, int], n: int) -> list[list[Any]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [[k, c] for k, c in ranked]


def _add_unique(values: list[str], value: str, cap: int) -> None:
    if value and value not in values and len(values) < cap:
        values.append(value)


def _merge_duplicate(attack: Attack, item: Item) -> None:
    """A duplicate adds its source and, if it knows the response, its status to the sample."""
    for sample in attack["sample_hits"]:
        if sample.get("_pair") == item.pair:
            _add_unique(sample["sources"], str(item.sample.get("source", "")), MAX_SOURCES)
            if not sample.get("response_status") and item.sample.get("response_status"):
                sample["response_status"] = item.sample["response_status"]
                sample["outcome"] = item.sample["outcome"]
            return


def add_hit(attack: Attack, item: Item, params: GroupingParams) -> None:
    """Fold one hit into ``attack`` (mutates it): counts, span, top lists, samples, outcome."""
    sample = item.sample
    ts = float(sample.get("ts") or 0.0)
    attack["first_seen"] = min(attack["first_seen"], ts)
    attack["last_seen"] = max(attack["last_seen"], ts)
    _add_unique(attack["sources"], str(sample.get("source", "")), MAX_SOURCES)
    _add_unique(attack["rule_ids"], str(sample.get("rule_id", "")), MAX_RULE_IDS)
    verdicts = attack["_verdicts"]
    verdict = hit_verdict(sample)  # type: ignore[arg-type]
    verdicts[verdict] = verdicts.get(verdict, 0) + 1
    attack["outcome"] = attack_outcome(verdicts)
    if item.duplicate:
        _merge_duplicate(attack, item)
        return
    attack["hits"] += 1
    cap = params.top_n * COUNTER_FACTOR
    bump(attack["_paths"], str(sample.get("path", "")), cap)
    bump(attack["_points"], point_text(sample.get("point") or []), cap)
    attack["paths"] = top(attack["_paths"], params.top_n)
    attack["points"] = top(attack["_points"], params.top_n)
    attack["sample_hits"].append(make_sample(item))
    del attack["sample_hits"][:-params.sample_hits]


def make_sample(item: Item) -> dict[str, Any]:
    sample = dict(item.sample)
    sample["sources"] = [str(sample.get("source", ""))]
    sample["_pair"] = item.pair
    return sample


def with_outcome(sample: dict[str, Any]) -> dict[str, Any]:
    """The redacted hit with its public ``outcome`` (what is stored and shown)."""
    sample["outcome"] = public_outcome(hit_verdict(sample))  # type: ignore[arg-type]
    return sample


def _target(current: dict[str, Attack | None], item: Item,
            params: GroupingParams) -> tuple[Attack, bool]:
    """The attack an item goes to and whether it is new."""
    attack = current.get(item.group)
    ts = float(item.sample.get("ts") or 0.0)
    if attack is not None and belongs(attack, ts, params.window_s):
        return attack, False
    return new_attack(item.group, item.sample), True


def apply_items(current: dict[str, Attack | None], items: list[Item],
                params: GroupingParams) -> BatchResult:
    """Apply a batch to the open attacks ``current`` (group -> attack or None; mutated).

    Items are applied in ts order. A duplicate whose attack is gone (trimmed, or outside the
    window) is counted as a hit of a new attack rather than lost.
    """
    result = BatchResult()
    for item in sorted(items, key=lambda i: hit_ts(i.sample)):
        attack, created = _target(current, item, params)
        if created:
            item = Item(item.group, item.pair, item.sample, False)
            result.created.append(attack["id"])
            old = current.get(item.group)
            if old is None or attack["last_seen"] >= old["last_seen"]:
                current[item.group] = attack
        result.hits_before.setdefault(attack["id"], attack["hits"])
        add_hit(attack, item, params)
        result.attacks[attack["id"]] = attack
        result.assigned[str(item.sample.get("id"))] = attack["id"]
    result.pointers = {group: a["id"] for group, a in current.items() if a is not None}
    return result


def events(result: BatchResult, every: int) -> list[tuple[str, Attack]]:
    """(kind, attack) for the sinks: ``attack.new`` once per new attack, ``attack.update``
    each time an attack's hit count crosses a multiple of ``every``."""
    out: list[tuple[str, Attack]] = []
    created = set(result.created)
    for attack_id_, attack in result.attacks.items():
        if attack_id_ in created:
            out.append(("attack.new", attack))
        elif attack["hits"] // every > result.hits_before.get(attack_id_, 0) // every:
            out.append(("attack.update", attack))
    return out


def public(attack: Attack, *, samples: bool = True) -> dict[str, Any]:
    """The attack as served: internal ``_`` state removed (also from its samples)."""
    out = {k: v for k, v in attack.items() if not k.startswith("_")}
    if samples:
        out["sample_hits"] = [{k: v for k, v in s.items() if not k.startswith("_")}
                              for s in attack.get("sample_hits", [])]
    else:
        out.pop("sample_hits", None)
    return out
