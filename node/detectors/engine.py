"""The detection engine: a RequestRecord in, a list of Hits out.

Where it sits: processing workers (``node/processing``) call ``Engine.load`` once per process
and ``engine.analyze(record)`` per request, then write the hits to ``<prefix>:hits``.
The flow of one request, each stage its own module:

    points.extract -> decode.variants -> prefilter (one Hyperscan scan per value and variant,
    by the database of its point kinds) -> point-kind filter (and the rule's skip_headers, names)
    -> Python ``re`` for prefilter-mode patterns -> request conditions (``unless``, ``when``)
    -> confirm/ (sql, html) -> exclusions -> class scores vs threshold -> Hits

# SECURITY: ``analyze`` never raises on attacker input: any error is counted in
``stats.errors`` and what was found so far is returned. The time budget stops the confirm
stage (the only stage whose cost is not linear in the scanned bytes) and is counted.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

import hyperscan

from node.config import DetectionConfig
from node.detectors import cache
from node.detectors.conditions import CONDITIONS
from node.detectors.confirm import CONFIRMERS
from node.detectors.decode import variants
from node.detectors.exclusions import ExclusionSet, parse_exclusion
from node.detectors.pack import (
    KIND_BIT,
    LoadReport,
    Pack,
    Rule,
    Verdicts,
    load_pack,
    pack_files,
    pack_hash,
    point_name,
    verdict_key,
)
from node.detectors.points import ARGS, HEADERS, POINT_MASKS, Limits, Point, extract
from node.detectors.prefilter import GROUPS, Databases, Prefilter, compile_databases, group_of
from node.records import FRAGMENT_MAX_CHARS, Hit, RequestRecord, as_text, hit_id, record_label

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters the processing role exports as metrics (monotonic, per process)."""

    analyzed: int = 0
    errors: int = 0  # analyses that hit an internal error (partial results returned)
    budget_overruns: int = 0  # analyses that stopped confirming at the time budget
    confirm_rejected: int = 0  # prefilter candidates a confirmer turned down


class _Candidate:
    """A rule's matches at one point. (No dataclass: mypyc leaves a dataclass's generated
    ``__init__`` interpreted, and there is one candidate per flagged rule and point.)"""

    def __init__(self, rule: Rule, point: Point) -> None:
        self.rule = rule
        self.point = point
        self.matches: list[tuple[str, bytes, int]] = []  # (text, bytes, end)


# (rule, its point mask, skip_headers, names, the pattern's Python regex or None)
_Check = tuple[Rule, int, frozenset[str], frozenset[str], re.Pattern[str] | None]
_Flag = tuple[str, bytes, dict[int, int]]  # (variant text, its bytes, {pattern id: match end})
_MemoKey = str  # the value as extracted, in the memo of its scan group
MEMO_VALUE_MAX: Final = 512  # longer values are rarely repeated: not memoized
# Values remembered per process, all groups (then the memos restart). Not Final: a test
# shrinks it, and it is read once per scan, not per value.
MEMO_SIZE = 16384
VERDICTS_SIZE: Final = 4096  # confirmer answers remembered per process (then they restart)


def _encode(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        # Surrogate escapes stand for the exact invalid bytes that were on the wire.
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")  # lone surrogates from %uD800 & co


class Engine:
    """Compiled rules plus the per-process Hyperscan state. Build with ``Engine.load``."""

    def __init__(self, cfg: DetectionConfig, pack: Pack, dbs: Databases,
                 time_budget_ms: float, cache_hit: bool) -> None:
        self.cfg = cfg
        self.pack = pack
        self.report: LoadReport = pack.report
        self.rules: tuple[Rule, ...] = pack.rules
        self.cache_hit = cache_hit
        self.stats = EngineStats()
        self.budget_s = time_budget_ms / 1000.0
        self.limits = Limits(cfg.max_points, cfg.max_json_depth, cfg.max_value_bytes)
        self.exclusions = ExclusionSet([parse_exclusion(e) for e in cfg.exclusions])
        # Per pattern id, its rule and what _candidates checks, as one tuple: Rule and
        # Pattern are interpreted classes, an attribute read from compiled code is a lookup
        # each time.
        self._checks: list[_Check] = [
            (rule, rule.point_mask, rule.skip_headers, rule.names, p.py)
            for rule in self.rules for p in rule.patterns]
        self._prefilter = Prefilter(dbs)
        # One memo per scan group, keyed by the value alone (no key tuple per point).
        self._memo: list[dict[_MemoKey, tuple[_Flag, ...]]] = [{} for _ in GROUPS]
        self._memo_len = 0  # values remembered, all groups
        # (confirmer, text) -> its answer: several rules of a class flag the same value,
        # and flagged benign values repeat; confirmers are pure functions of the text.
        self._verdicts: dict[tuple[str, str], bool] = {}
        # Every mask ``extract`` produces, with its scan group: one lookup per point.
        self._group_by_mask: dict[int, int] = {m: group_of(m) for m in POINT_MASKS}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, cfg: DetectionConfig, cache_dir: Path, *,
             time_budget_ms: float = 50.0) -> Engine:
        """Load the packs and the Hyperscan databases (from ``cache_dir`` when the pack hash
        matches, else compiled and cached). Bad rules are in ``engine.report``."""
        key = pack_hash(pack_files(cfg), cfg)
        cached = cache.read_databases(cache_dir, key)
        verdicts = cache.read_verdicts(cache_dir)
        if cached is not None:
            verdicts.update(cached[1])
        verdicts.optimistic = True
        pack = load_pack(cfg, verdicts)
        if cached is not None and pack.hash == key:
            return cls(cfg, pack, cached[0], time_budget_ms, cache_hit=True)
        try:
            dbs = _compile(pack)
        except hyperscan.error:
            # Some pattern does not compile: judge the unknown ones alone, then rebuild.
            verdicts.optimistic = False
            pack = load_pack(cfg, verdicts)
            dbs = _compile(pack)
        for p in (p for rule in pack.rules for p in rule.patterns):
            verdicts.setdefault(verdict_key(p.regex, p.hs_flags), None)
        cache.write_verdicts(cache_dir, verdicts)
        regexes = {p.regex for rule in pack.rules for p in rule.patterns}
        own = Verdicts((k, v) for k, v in verdicts.items() if k.split(":", 1)[1] in regexes)
        cache.write_databases(cache_dir, pack.hash, dbs, own)
        return cls(cfg, pack, dbs, time_budget_ms, cache_hit=False)

    # ------------------------------------------------------------------ analysis

    def analyze(self, record: RequestRecord, exclusions: ExclusionSet | None = None,
                application: str = "") -> list[Hit]:
        """Hits of the classes whose score reaches the threshold. Never raises."""
        self.stats.analyzed += 1
        try:
            deadline = time.perf_counter() + self.budget_s
            points = extract(record, self.limits)
            candidates = self._candidates(points)
            if not candidates:
                return []  # most requests: nothing to confirm, score or report
            found = [c for c in candidates.values() if _conditions_hold(c.rule, record, c.point)]
            # Classes that cannot reach the threshold even if every candidate confirms are
            # dropped before confirming (most weak matches in benign traffic end here).
            viable = self._viable_classes(c.rule for c in found)
            if not viable:
                return []
            kept = [c for c in found if c.rule.cls in viable]
            confirmed = self._confirm(kept, deadline)
            if not confirmed:
                return []
            if len(confirmed) < len(kept):
                # Some turned down (or the budget ran out): their rules' scores are gone.
                viable = self._viable_classes(cand.rule for cand, _, _ in confirmed)
            return self._report(record, confirmed, viable, exclusions, application)
        except Exception:  # noqa: BLE001 - SECURITY: attacker input must never crash a worker
            self.stats.errors += 1
            log.exception("analysis failed for record %s", record_label(record))
            return []

    def _scan(self, points: Sequence[Point]) -> list[tuple[int, _Flag]]:
        """(point index, flagged variant) for every variant Hyperscan flags. Values seen
        before (user agents, accept headers: most header values repeat) come from the memo
        without decoding or scanning; the others are decoded and scanned per group."""
        out: list[tuple[int, _Flag]] = []
        pending: list[list[tuple[int, str, bytes, _MemoKey | None]]] | None = None
        cap, passes = self.cfg.max_value_bytes, self.cfg.max_decode_passes
        memos, groups = self._memo, self._group_by_mask
        # The hot loop of the engine: kept free of per-point function calls where it can.
        for i, point in enumerate(points):
            mask, value = point.mask, point.value
            g = groups.get(mask)
            if g is None:
                self._unknown_mask(mask)
            if len(value) <= MEMO_VALUE_MAX:
                known = memos[g].get(value)
                if known is not None:
                    if known:  # most remembered values are clean: the shared empty tuple
                        out += [(i, flag) for flag in known]
                    continue
                key: _MemoKey | None = value
            else:
                key = None
            if pending is None:
                pending = [[] for _ in GROUPS]  # only requests with a first-seen value
            segs = pending[g]
            for v in variants(value, passes, cap):
                try:
                    data = v.encode()  # valid UTF-8 text: the common case, no call
                except UnicodeEncodeError:
                    data = _encode(v)
                segs.append((i, v, data[:cap], key))
        for g, segs in enumerate(pending or ()):
            if segs:
                self._scan_group(g, segs, out)
        return out

    @staticmethod
    def _unknown_mask(mask: int) -> NoReturn:
        # The groups were compiled for POINT_MASKS only: another mask could meet a group
        # without the patterns that apply to it (a bug in points.py, never silently).
        raise ValueError(f"point mask {mask} is not in points.POINT_MASKS")

    def _scan_group(self, g: int, segs: list[tuple[int, str, bytes, _MemoKey | None]],
                    out: list[tuple[int, _Flag]]) -> None:
        # Every memo key of the group is learned, flagged or not: a clean value is the
        # common case and must be the cheapest repeat. Tuples, and the shared empty one for
        # clean values: thousands of remembered lists would slow every GC pass down.
        # Learned only once the scan returned: a scan that raises must not leave its values
        # remembered as clean.
        learned: dict[_MemoKey, tuple[_Flag, ...]] = dict.fromkeys(
            [s[3] for s in segs if s[3] is not None], ())
        for j, found in self._prefilter.scan(g, [s[2] for s in segs]):
            i, text, data, key = segs[j]
            flag = (text, data, found)
            out.append((i, flag))
            if key is not None:
                learned[key] += (flag,)
        if self._memo_len + len(learned) > MEMO_SIZE:
            self._clear_values()  # SECURITY: bounded; a flood of new values only resets it
        memo = self._memo[g]
        before = len(memo)
        memo.update(learned)
        self._memo_len += len(memo) - before

    def _candidates(self, points: Sequence[Point]) -> dict[tuple[str, tuple[str, ...]], _Candidate]:
        """(rule, point) pairs Hyperscan found, filtered by the rules' point kinds."""
        out: dict[tuple[str, tuple[str, ...]], _Candidate] = {}
        checks = self._checks
        for i, (text, data, found) in self._scan(points):
            point = points[i]
            for pid, end in found.items():
                rule, mask, skip_headers, names, py = checks[pid]
                if not mask & point.mask:
                    continue
                if skip_headers and point.path[0] == "header" and point.path[1] in skip_headers:
                    continue
                if names and point_name(point.path) not in names:
                    continue
                if py is not None and py.search(text) is None:
                    continue  # prefilter-mode pattern: Python re decides
                key = (rule.id, point.path)
                cand = out.get(key)
                if cand is None:
                    cand = out[key] = _Candidate(rule, point)
                cand.matches.append((text, data, end))
        return out

    def _confirm(self, candidates: Iterable[_Candidate],
                 deadline: float) -> list[tuple[_Candidate, bytes, int]]:
        """Candidates that pass their confirmer: (candidate, matched bytes, match end)."""
        confirmed: list[tuple[_Candidate, bytes, int]] = []
        for cand in candidates:
            if cand.rule.confirm is None:
                confirmed.append((cand, cand.matches[0][1], cand.matches[0][2]))
                continue
            if time.perf_counter() > deadline:
                self.stats.budget_overruns += 1
                break
            name = cand.rule.confirm
            match = next((m for m in cand.matches if self._verdict(name, _around(*m))), None)
            if match is None:
                self.stats.confirm_rejected += 1
            else:
                confirmed.append((cand, match[1], match[2]))
        return confirmed

    def _verdict(self, confirmer: str, text: str) -> bool:
        key = (confirmer, text)
        known = self._verdicts.get(key)
        if known is None:
            known = CONFIRMERS[confirmer](text)
            if len(self._verdicts) >= VERDICTS_SIZE:
                self._verdicts.clear()  # SECURITY: bounded, like the value memo
            self._verdicts[key] = known
        return known

    def _report(self, record: RequestRecord, confirmed: list[tuple[_Candidate, bytes, int]],
                viable: set[str], exclusions: ExclusionSet | None,
                application: str) -> list[Hit]:
        """Hits of the confirmed candidates of the ``viable`` classes (those the confirmed
        rules' scores carry to the threshold), less the excluded ones."""
        template = self._hit_template(record, application)
        hits = [(self._hit(template, cand), data, end)
                for cand, data, end in confirmed if cand.rule.cls in viable]
        excl = [x for x in (self.exclusions, exclusions) if x]
        if excl:
            hits = [h for h in hits if not any(x.matches(h[0]) for x in excl)]
            reported = self._reported_classes([h for h, _, _ in hits])
        else:
            reported = viable  # nothing dropped: the same rules, the same scores
        out = []
        for hit, data, end in hits:
            if hit["class"] in reported:
                start, stop = Prefilter.span(end)
                hit["fragment"] = data[start:stop].decode("utf-8", "replace")[:FRAGMENT_MAX_CHARS]
                out.append(hit)
        return out

    def _viable_classes(self, rules: Iterable[Rule]) -> set[str]:
        """Classes whose distinct rules' scores add up to the threshold."""
        scores: dict[str, int] = {}
        for rule in {r.id: r for r in rules}.values():
            scores[rule.cls] = scores.get(rule.cls, 0) + rule.score
        return {c for c, score in scores.items() if score >= self.cfg.threshold}

    def _reported_classes(self, hits: list[Hit]) -> set[str]:
        """Classes whose score (each rule counted once) reaches the threshold."""
        scores: dict[str, int] = {}
        seen: set[str] = set()
        for hit in hits:
            if hit["rule_id"] not in seen:
                seen.add(hit["rule_id"])
                scores[hit["class"]] = scores.get(hit["class"], 0) + hit["score"]
        return {c for c, score in scores.items() if score >= self.cfg.threshold}

    @staticmethod
    def _hit_template(record: RequestRecord, application: str) -> Hit:
        """The fields every hit of ``record`` shares, in the order a hit lists them (rule
        and point fields are placeholders ``_hit`` overwrites)."""
        host = as_text(record.get("host", ""))
        response: Mapping[str, Any] = record.get("response") or {}
        return {"id": "", "record_id": record.get("id", ""),
                "request_id": record.get("request_id", ""),
                "ts": float(record.get("ts", 0.0)), "client_ip": record.get("client_ip", ""),
                "host": host, "application": application or host,
                "method": as_text(record.get("method", "")),
                "path": as_text(record.get("path", "")), "class": "", "rule_id": "",
                "severity": "", "score": 0, "point": [], "fragment": "",
                "source": record.get("source", ""),
                "response_status": int(response.get("status", 0) or 0)}

    @staticmethod
    def _hit(template: Hit, cand: _Candidate) -> Hit:
        rule, path = cand.rule, list(cand.point.path)
        hit: Hit = template.copy()  # type: ignore[assignment]
        hit["id"] = hit_id(template["record_id"], rule.id, path)
        hit["class"], hit["rule_id"] = rule.cls, rule.id
        hit["severity"], hit["score"], hit["point"] = rule.severity, rule.score, path
        return hit

    def clear_memo(self) -> None:
        """Forget remembered values (benchmarks replaying the same requests call it between
        rounds, so a replay does not count as repeated traffic)."""
        self._clear_values()
        self._verdicts.clear()

    def _clear_values(self) -> None:
        for memo in self._memo:
            memo.clear()
        self._memo_len = 0

    # ------------------------------------------------------------------ rule examples

    def match_value(self, value: str, kind: str, name: str = "q",
                    prefilter_only: bool = False) -> set[str]:
        """Rule ids matching ``value`` seen at one point of ``kind`` (no class threshold).
        With ``prefilter_only``, the Hyperscan stage alone (no ``re`` check, no confirm)."""
        point = Point(_kind_mask(kind), _kind_path(kind, name), value)
        if prefilter_only:
            return self._prefilter_rules(point)
        example: RequestRecord = {"host": EXAMPLE_HOST}  # type: ignore[typeddict-item]
        found = [c for c in self._candidates([point]).values()
                 if _conditions_hold(c.rule, example, point)]
        confirmed = self._confirm(found, time.perf_counter() + 60.0)
        return {cand.rule.id for cand, _, _ in confirmed}

    def _prefilter_rules(self, point: Point) -> set[str]:
        found: set[str] = set()
        for _, (_, _, pids) in self._scan([point]):
            found.update(self._checks[pid][0].id for pid in pids
                         if self._checks[pid][1] & point.mask)
        return found


# The Host of the request a rule example is judged in (the value alone has none): a rule's
# ``when``/``unless`` conditions see a request to this host with no other header.
EXAMPLE_HOST: Final = "app.example.com"


def _conditions_hold(rule: Rule, record: RequestRecord, point: Point) -> bool:
    """The rule's ``unless`` condition does not hold for the request, its ``when`` does."""
    if rule.unless is not None and CONDITIONS[rule.unless](record, point.value):
        return False
    return rule.when is None or CONDITIONS[rule.when](record, point.value)


CONFIRM_WINDOW: Final = 1024  # characters a confirmer sees of a long value, around the match


def _around(text: str, data: bytes, end: int) -> str:
    """What a confirmer looks at: the value, or for a long one the window ending a little
    after the match (its tokenizer only follows the first tokens, like libinjection)."""
    if len(text) <= CONFIRM_WINDOW:
        return text
    stop = end if len(text) == len(data) else len(data[:end].decode("utf-8", "ignore"))
    return text[max(0, stop - CONFIRM_WINDOW * 3 // 4): stop + CONFIRM_WINDOW // 4]


def _kind_mask(kind: str) -> int:
    # A header example is a user-input header (it also answers to all_headers rules).
    return HEADERS if kind == "headers" else (ARGS if kind == "args" else KIND_BIT[kind])


def _kind_path(kind: str, name: str) -> tuple[str, ...]:
    return {"path": ("path",), "method": ("method",), "body": ("body",),
            "headers": ("header", name), "all_headers": ("header", name),
            "cookies": ("cookie", name), "filenames": ("body", "multipart", name, "filename"),
            "arg_names": ("query", name, "#name")}.get(kind, ("query", name))


def _compile(pack: Pack) -> Databases:
    patterns = [p for rule in pack.rules for p in rule.patterns]
    masks = [rule.point_mask for rule in pack.rules for _ in rule.patterns]
    return compile_databases(patterns, masks)


def freeze_loaded_state() -> None:
    """Move everything loaded so far (rule tables, compiled regexes, databases) out of the
    garbage collector's sight: a long-lived worker otherwise re-walks those objects on every
    collection, which measured 7-12% of analysis time. Call once, after ``Engine.load``."""
    gc.collect()
    gc.freeze()
