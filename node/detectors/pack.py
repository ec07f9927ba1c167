"""Rule packs: load and validate the YAML rules, report per rule what loaded and why not.

First stage of detection, run once per process at start-up (``Engine.load``): the built-in
packs ``node/detectors/rules/*.yaml`` then ``detection.rules_dir``. Each rule is validated on
its own (fields, class, severity, points vocabulary, every pattern compiles in Hyperscan,
falling back to prefilter mode plus Python ``re`` for constructs Hyperscan lacks); a bad rule
is reported as failed with the reason and the rest of the pack still loads, like libddwaf's
diagnostics. ``pack_hash`` keys the compiled-database cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperscan
import yaml

from node.config import CLASSES, DetectionConfig
from node.detectors.conditions import CONDITIONS

# Bump when the engine changes what a compiled database means. The source of the modules
# that build the databases is hashed into the pack hash too (ENGINE_SOURCES), so an edit to
# them can never load a database compiled under other rules of the game.
ENGINE_VERSION = "oob-engine-2"
ENGINE_SOURCES = ("pack.py", "prefilter.py", "rewrite.py", "points.py")

BUILTIN_DIR = Path(__file__).parent / "rules"
SEVERITIES = ("low", "medium", "high", "critical")
POINT_KINDS = ("path", "args", "arg_names", "body", "cookies", "headers", "all_headers",
               "filenames", "method")
KIND_BIT = {kind: 1 << i for i, kind in enumerate(POINT_KINDS)}
DEFAULT_POINTS = ("args", "path", "cookies", "headers")
FLAG_BITS = {"caseless": hyperscan.HS_FLAG_CASELESS, "dotall": hyperscan.HS_FLAG_DOTALL,
             "multiline": hyperscan.HS_FLAG_MULTILINE}
RE_BITS = {"caseless": re.IGNORECASE, "dotall": re.DOTALL, "multiline": re.MULTILINE}
DEFAULT_FLAGS = ("caseless", "dotall")
CONFIRM_NAMES = ("sql", "html")
RULE_KEYS = {"id", "name", "severity", "score", "points", "patterns", "flags", "confirm",
             "skip_headers", "unless", "when", "names",
             "examples", "description", "references", "tags"}
ID_RE = re.compile(r"^[a-z_]+-[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Example:
    """One example value and the point kind/name where the engine checks it."""

    value: str
    point: str
    name: str


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern; ``prefilter`` when Hyperscan only approximates it."""

    regex: str
    hs_flags: int
    prefilter: bool
    py: re.Pattern[str] | None  # exact check for prefilter patterns


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    cls: str
    severity: str
    score: int
    points: tuple[str, ...]
    point_mask: int
    patterns: tuple[Pattern, ...]
    confirm: str | None
    match: tuple[Example, ...]
    no_match: tuple[Example, ...]
    source: str
    skip_headers: frozenset[str] = frozenset()  # header names (lowercase) it never looks at
    unless: str | None = None  # a conditions.CONDITIONS name that silences it for a request
    when: str | None = None  # a conditions.CONDITIONS name without which it stays silent
    names: frozenset[str] = frozenset()  # point names it looks at (point_name form); all if empty


@dataclass(frozen=True)
class RuleStatus:
    id: str
    cls: str
    source: str
    status: str  # loaded | failed | disabled
    error: str = ""


@dataclass(frozen=True)
class LoadReport:
    """Per-rule diagnostics of a pack load, plus file-level errors."""

    rules: tuple[RuleStatus, ...]
    file_errors: tuple[tuple[str, str], ...] = ()

    @property
    def loaded(self) -> list[str]:
        return [r.id for r in self.rules if r.status == "loaded"]

    @property
    def failed(self) -> list[RuleStatus]:
        return [r for r in self.rules if r.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded,
                "failed": {r.id: r.error for r in self.failed},
                "disabled": [r.id for r in self.rules if r.status == "disabled"],
                "file_errors": dict(self.file_errors)}


@dataclass(frozen=True)
class Pack:
    rules: tuple[Rule, ...]
    report: LoadReport
    hash: str
    files: tuple[str, ...] = field(default=())


class Verdicts(dict[str, str | None]):
    """Hyperscan's answer per ``"<flags>:<regex>"``: None (compiles) or its error message.

    ``optimistic``: a pattern not yet judged is assumed to compile, without compiling it
    alone. The engine builds the whole database at once that way (one compile instead of
    one per pattern) and judges patterns one by one only when the whole fails."""

    optimistic: bool = False


class RuleError(ValueError):
    """A rule that cannot load; the message says which field and why."""


# ----------------------------------------------------------------------------- files

def pack_files(cfg: DetectionConfig) -> list[Path]:
    """Built-in packs first, then the extra directory, each sorted by name."""
    files = sorted(BUILTIN_DIR.glob("*.yaml"))
    if cfg.rules_dir:
        files += sorted(Path(cfg.rules_dir).glob("*.yaml"))
    return files


def pack_hash(files: Iterable[Path], cfg: DetectionConfig) -> str:
    """Hash of every pack file's content, the engine (version and source of the modules
    that compile) and Hyperscan versions, and the config that changes the compiled set
    (disabled rules and classes)."""
    h = hashlib.sha256()
    h.update(ENGINE_VERSION.encode())
    h.update(str(hyperscan.__version__).encode())
    for name in ENGINE_SOURCES:
        h.update(hashlib.sha256((Path(__file__).parent / name).read_bytes()).digest())
    for path in files:
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(repr((sorted(cfg.disabled_rules), sorted(cfg.disabled_classes))).encode())
    return h.hexdigest()[:32]


def load_pack(cfg: DetectionConfig, verdicts: Verdicts | None = None) -> Pack:
    """Load every pack file; never raises for a bad file or rule (see the report)."""
    files = pack_files(cfg)
    verdicts = Verdicts() if verdicts is None else verdicts
    rules: list[Rule] = []
    statuses: list[RuleStatus] = []
    file_errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in files:
        try:
            doc = _read_pack(path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            file_errors.append((path.name, str(exc)[:300]))
            continue
        for raw in doc["rules"]:
            status, rule = _load_one(raw, doc["class"], path.name, seen, cfg, verdicts)
            statuses.append(status)
            if rule is not None:
                rules.append(rule)
    report = LoadReport(tuple(statuses), tuple(file_errors))
    return Pack(tuple(rules), report, pack_hash(files, cfg), tuple(str(f) for f in files))


def _read_pack(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("pack is not a mapping")
    if doc.get("class") not in CLASSES:
        raise ValueError(f"class: {doc.get('class')!r} is not one of {', '.join(CLASSES)}")
    if not isinstance(doc.get("rules"), list):
        raise ValueError("rules: missing or not a list")
    return doc


def _load_one(raw: Any, cls: str, source: str, seen: set[str], cfg: DetectionConfig,
              verdicts: Verdicts) -> tuple[RuleStatus, Rule | None]:
    rid = str(raw.get("id", "?")) if isinstance(raw, dict) else "?"
    try:
        rule = parse_rule(raw, cls, source, verdicts)
        if rule.id in seen:
            raise RuleError(f"id: duplicate rule id {rule.id!r}")
    except RuleError as exc:
        return RuleStatus(rid, cls, source, "failed", str(exc)), None
    seen.add(rule.id)
    if rule.id in cfg.disabled_rules or cls in cfg.disabled_classes:
        return RuleStatus(rule.id, cls, source, "disabled"), None
    return RuleStatus(rule.id, cls, source, "loaded"), rule


# ----------------------------------------------------------------------------- one rule

def parse_rule(raw: Any, cls: str, source: str = "", verdicts: Verdicts | None = None) -> Rule:
    """Validate one rule mapping; raises RuleError naming the field."""
    if not isinstance(raw, dict):
        raise RuleError("rule is not a mapping")
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise RuleError(f"{sorted(unknown)[0]}: unknown field")
    rid = _rule_id(raw.get("id"), cls)
    points = _points(raw.get("points", list(DEFAULT_POINTS)))
    flags = _flags(raw.get("flags", list(DEFAULT_FLAGS)))
    patterns = tuple(compile_pattern(p, flags, f"patterns[{i}]", verdicts)
                     for i, p in enumerate(_str_list(raw.get("patterns"), "patterns")))
    confirm = raw.get("confirm")
    if confirm is not None and confirm not in CONFIRM_NAMES:
        raise RuleError(f"confirm: {confirm!r} is not one of {', '.join(CONFIRM_NAMES)}")
    unless, when = _condition(raw, "unless"), _condition(raw, "when")
    match, no_match = _examples(raw.get("examples"), points[0])
    return Rule(id=rid, name=str(raw.get("name") or rid), cls=cls,
                severity=_severity(raw.get("severity")), score=_score(raw.get("score", 5)),
                points=points, point_mask=_mask(points), patterns=patterns, confirm=confirm,
                match=match, no_match=no_match, source=source,
                skip_headers=_skip_headers(raw.get("skip_headers"), points), unless=unless,
                when=when, names=_names(raw.get("names")))


def _condition(raw: dict[str, Any], key: str) -> str | None:
    name = raw.get(key)
    if name is not None and name not in CONDITIONS:
        raise RuleError(f"{key}: {name!r} is not one of {', '.join(CONDITIONS)}")
    return name


def point_name(path: tuple[str, ...]) -> str:
    """The name a point answers to in a rule's ``names``: its parameter, field, key, cookie
    or header name (the last one of a nested JSON path), lowercased without ``_``, ``-``
    and ``.`` (``returnTo``, ``return_to`` and ``return-to`` are one name); "" for the
    path, the method and a whole body."""
    parts = [p for p in path[1:] if not p.startswith("#") and not p.isdigit()]
    if path[:1] == ("body",) and parts[:1] in (["form"], ["multipart"], ["xml"], ["json"]):
        parts = parts[1:]
    return _fold_name(parts[-1]) if parts else ""


_NAME_FOLD = re.compile(r"[_.\-]")


def _fold_name(name: str) -> str:
    return _NAME_FOLD.sub("", name.lower())


def _names(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    return frozenset(_fold_name(n) for n in _str_list(value, "names"))


def _rule_id(value: Any, cls: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise RuleError(f"id: {value!r} is not <class>-<slug> (lowercase)")
    if not value.startswith(cls + "-"):
        raise RuleError(f"id: {value!r} does not start with the pack class {cls!r}")
    return value


def _severity(value: Any) -> str:
    if value not in SEVERITIES:
        raise RuleError(f"severity: {value!r} is not one of {', '.join(SEVERITIES)}")
    return str(value)


def _score(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise RuleError(f"score: {value!r} is not an integer in 0..100")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{name}: must be a non-empty list of strings")
    return value


def _points(value: Any) -> tuple[str, ...]:
    points = _str_list(value, "points")
    for p in points:
        if p not in KIND_BIT:
            raise RuleError(f"points: {p!r} is not one of {', '.join(POINT_KINDS)}")
    return tuple(points)


def _skip_headers(value: Any, points: tuple[str, ...]) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not {"headers", "all_headers"} & set(points):
        raise RuleError("skip_headers: the rule applies to no header")
    return frozenset(name.lower() for name in _str_list(value, "skip_headers"))


def _mask(points: Iterable[str]) -> int:
    mask = 0
    for p in points:
        mask |= KIND_BIT[p]
    return mask


def _flags(value: Any) -> tuple[str, ...]:
    flags = _str_list(value, "flags") if value else []
    for f in flags:
        if f not in FLAG_BITS:
            raise RuleError(f"flags: {f!r} is not one of {', '.join(FLAG_BITS)}")
    return tuple(flags)


def compile_pattern(regex: str, flags: tuple[str, ...], where: str,
                    verdicts: Verdicts | None = None) -> Pattern:
    """Check one pattern compiles in Hyperscan (exact, else prefilter + Python ``re``).

    ``verdicts`` memoizes Hyperscan's answers (the engine keeps them on disk)."""
    memo = Verdicts() if verdicts is None else verdicts
    hs_flags = 0
    for f in flags:
        hs_flags |= FLAG_BITS[f]
    if not regex:
        raise RuleError(f"{where}: empty pattern")
    error = _hs_try(regex, hs_flags, memo)
    if error is None:
        return Pattern(regex, hs_flags, False, None)
    # Constructs Hyperscan lacks (backrefs, lookaround): scan a superset, confirm with re.
    if _hs_try(regex, hs_flags | hyperscan.HS_FLAG_PREFILTER, memo) is not None:
        raise RuleError(f"{where}: Hyperscan: {error}")
    re_flags = 0
    for f in flags:
        re_flags |= RE_BITS[f]
    try:
        py = re.compile(regex, re_flags)
    except re.error as exc:
        raise RuleError(f"{where}: Hyperscan: {error}; Python re: {exc}") from None
    return Pattern(regex, hs_flags | hyperscan.HS_FLAG_PREFILTER, True, py)


def verdict_key(regex: str, flags: int) -> str:
    return f"{flags}:{regex}"


def _hs_try(regex: str, flags: int, memo: Verdicts) -> str | None:
    """None when the pattern compiles with these flags, else Hyperscan's message (a pattern
    that can match the empty string is refused by Hyperscan itself)."""
    key = verdict_key(regex, flags)
    if key not in memo and memo.optimistic and not flags & hyperscan.HS_FLAG_PREFILTER:
        return None
    if key not in memo:
        try:
            hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK).compile(
                expressions=[regex.encode("utf-8")], ids=[0], elements=1, flags=[flags])
            memo[key] = None
        except hyperscan.error as exc:
            memo[key] = str(exc) or type(exc).__name__
    return memo[key]


def _examples(raw: Any, first_point: str) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    if not isinstance(raw, dict) or not raw.get("match"):
        raise RuleError("examples: needs at least one 'match' example")
    unknown = set(raw) - {"match", "no_match"}
    if unknown:
        raise RuleError(f"examples.{sorted(unknown)[0]}: unknown field")
    return (tuple(_example(e, first_point, "examples.match") for e in raw["match"]),
            tuple(_example(e, first_point, "examples.no_match")
                  for e in raw.get("no_match") or []))


def _example(raw: Any, first_point: str, where: str) -> Example:
    if isinstance(raw, str):
        return Example(raw, first_point, _default_name(first_point))
    if isinstance(raw, dict) and isinstance(raw.get("value"), str):
        point = raw.get("point", first_point)
        if point not in KIND_BIT:
            raise RuleError(f"{where}: point {point!r} is not one of {', '.join(POINT_KINDS)}")
        return Example(raw["value"], point, str(raw.get("name") or _default_name(point)))
    raise RuleError(f"{where}: an example is a string or {{point, name, value}}")


def _default_name(point: str) -> str:
    return {"headers": "user-agent", "all_headers": "x-custom", "cookies": "session",
            "filenames": "file", "arg_names": "q"}.get(point, "q")
