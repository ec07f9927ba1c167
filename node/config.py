"""Typed configuration, built once at start-up and passed to every role.

Order of precedence: defaults < YAML file (``--config`` / ``OOB_CONFIG``) < environment
(``OOB_<SECTION>_<KEY>``, plus the fixed short names of DESIGN.md such as ``OOB_REDIS_URL``)
< CLI flags. Every field carries a one-line description that ``oob-node config`` prints.
No other module reads the environment: they receive a ``NodeConfig``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid option; the message names the option (``section.key``)."""


def opt(default: Any, help: str, *, env: str | None = None, min: float | None = None,
        max: float | None = None, choices: tuple[str, ...] | None = None,
        secret: bool = False) -> Any:
    """A config field with its description, bounds and optional fixed env name."""
    meta = {"help": help, "env": env, "min": min, "max": max, "choices": choices,
            "secret": secret}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


LOOPBACK = ["127.0.0.0/8", "::1/128"]
EVENT_LOOPS = ("uvloop", "asyncio")  # node/eventloop.py
CLASSES = ("sqli", "xss", "path_traversal", "rce", "ssti", "ssrf", "xxe", "ldapi", "nosqli",
           "jndi", "crlf", "open_redirect", "scanner", "protocol")


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = opt(None, "Redis/Valkey URL (redis://, rediss://, unix://); unset starts "
                          "the embedded server in the data directory", env="OOB_REDIS_URL")
    prefix: str = opt("oob", "prefix of every Redis key, so several nodes can share one Redis")
    socket_timeout_s: float = opt(2.0, "timeout of one Redis command", min=0.05, max=60)
    embedded_maxmemory_mb: int = opt(0, "maxmemory of the embedded server in MiB (0: unlimited)",
                                     min=0)


@dataclass(frozen=True)
class ReceiverConfig:
    mirror_listen: str = opt("127.0.0.1:8445", "host:port of the mirror listener (hostile input)",
                             env="OOB_MIRROR_LISTEN")
    batch_listen: str = opt("127.0.0.1:8446", "host:port of the batch listener (/v1/batch, "
                            "/healthz, /readyz, /metrics)", env="OOB_BATCH_LISTEN")
    batch_token: str | None = opt(None, "bearer token the Lua plugin sends to /v1/batch",
                                  env="OOB_BATCH_TOKEN", secret=True)
    batch_token_file: str | None = opt(None, "file holding the batch token (read at start-up)")
    max_body_bytes: int = opt(65536, "request/response body bytes kept per record; the rest is "
                              "drained and discarded", min=0, max=64 * 1024 * 1024)
    max_batch_bytes: int = opt(8 * 1024 * 1024, "largest /v1/batch body accepted (413 above)",
                               min=1024, max=512 * 1024 * 1024)
    max_batch_records: int = opt(10000, "most records in one /v1/batch", min=1)
    max_header_count: int = opt(128, "most headers in a mirrored request; more is rejected (431)",
                                min=1, max=10000)
    max_header_bytes: int = opt(16384, "longest request line or single header field in bytes",
                                min=256, max=1024 * 1024)
    max_head_bytes: int = opt(65536, "largest request head (request line and all headers) "
                              "of a mirrored request (431 above)", min=1024,
                              max=16 * 1024 * 1024)
    idle_timeout_s: float = opt(300.0, "mirror connections with no bytes received for this "
                                "long are closed", min=1, max=86400)
    max_inflight: int = opt(1024, "most requests handled at once per listener before shedding",
                            min=1)
    trusted_proxies: list[str] = opt(LOOPBACK, "CIDRs whose forwarding header is believed "
                                     "(nginx set_real_ip_from)", env="OOB_TRUSTED_PROXIES")
    real_ip_header: str = opt("X-Forwarded-For", "header carrying the client address: "
                              "X-Forwarded-For, X-Real-IP, Forwarded, or any name",
                              env="OOB_REAL_IP_HEADER")
    real_ip_recursive: bool = opt(False, "walk the header from the right skipping trusted "
                                  "addresses (nginx real_ip_recursive)",
                                  env="OOB_REAL_IP_RECURSIVE")


@dataclass(frozen=True)
class QueueConfig:
    requests_maxlen: int = opt(200000, "approximate MAXLEN of the requests stream in entries "
                               "(last-resort memory bound)", min=100)
    hits_maxlen: int = opt(200000, "approximate MAXLEN of the hits stream in entries", min=100)
    high_water: int = opt(50000, "records waiting (group lag + pending) above which the receiver "
                          "sheds", min=1)
    records_per_entry: int = opt(100, "records packed into one stream entry", min=1, max=10000)
    flush_interval_ms: float = opt(5.0, "longest a record waits in the receiver before XADD",
                                   min=0.1, max=5000)
    max_buffered_records: int = opt(20000, "records buffered in the receiver while Redis is slow "
                                    "or down; beyond it new records are shed", min=1)
    max_buffered_bytes: int = opt(64 * 1024 * 1024, "bytes of records buffered in the receiver "
                                  "(bodies included); beyond it new records are shed", min=65536)
    depth_interval_ms: float = opt(500.0, "how often the receiver refreshes the queue depth that "
                                   "decides shedding", min=10, max=60000)


@dataclass(frozen=True)
class ProcessingConfig:
    workers: int = opt(2, "processing worker processes", env="OOB_WORKERS", min=1, max=256)
    batch_entries: int = opt(16, "stream entries read per XREADGROUP", min=1, max=10000)
    block_ms: int = opt(1000, "XREADGROUP block time", min=1, max=60000)
    claim_idle_ms: int = opt(30000, "reclaim entries pending longer than this from dead workers "
                             "(keep it above record_timeout_s)",
                             min=100)
    max_deliveries: int = opt(5, "deliveries after which an entry goes to the dead-letter stream",
                              min=1, max=1000)
    time_budget_ms: float = opt(50.0, "analysis time budget per request", min=1, max=60000)
    shutdown_grace_s: float = opt(20.0, "on stop, time workers get to finish and commit their "
                                  "batch before they are killed", min=0.1, max=3600)
    record_timeout_s: float = opt(10.0, "a worker stuck this long on one record is killed and "
                                  "restarted (the entry is redelivered, then dead-lettered)",
                                  min=0.1, max=3600)
    metrics_listen: str = opt("127.0.0.1:9464", "host:port of the processing role's /metrics, "
                              "/healthz, /readyz")


@dataclass(frozen=True)
class DetectionConfig:
    rules_dir: str | None = opt(None, "extra directory of rule pack YAML files, loaded after the "
                                "built-in packs")
    disabled_classes: list[str] = opt([], "attack classes not reported")
    disabled_rules: list[str] = opt([], "rule ids not loaded")
    threshold: int = opt(5, "score per class at which a request is reported", min=1)
    max_decode_passes: int = opt(3, "most URL-decoding passes per value", min=1, max=10)
    max_value_bytes: int = opt(16384, "bytes of one value scanned after decoding", min=64)
    max_points: int = opt(512, "most points (values) extracted from one request", min=1)
    max_json_depth: int = opt(32, "deepest JSON/XML nesting followed", min=1, max=1000)
    exclusions: list[dict[str, Any]] = opt([], "static exclusions: maps with any of class, "
                                           "rule_id, point, host, path_prefix, client_cidr")


@dataclass(frozen=True)
class AggregationConfig:
    console_listen: str = opt("127.0.0.1:8080", "host:port of the API, console, /metrics",
                              env="OOB_CONSOLE_LISTEN")
    api_token: str | None = opt(None, "bearer token of /api/v1 (run generates one if unset)",
                                env="OOB_API_TOKEN", secret=True)
    api_token_file: str | None = opt(None, "file holding the API token")
    attack_window_s: float = opt(900.0, "largest gap between hits of one attack", min=1)
    top_n: int = opt(10, "paths and points kept per attack with their counts", min=1, max=1000)
    sample_hits: int = opt(20, "last sample hits kept per attack", min=1, max=1000)
    retention_s: float = opt(7 * 86400.0, "attacks and hits older than this are deleted", min=60)
    max_attacks: int = opt(100000, "most attacks kept; the oldest are deleted beyond it", min=10)
    max_hits: int = opt(1000000, "most stored hits kept", min=100)
    applications: dict[str, list[str]] = opt({}, "application name -> host glob patterns "
                                             "(without it, the host is the application)")


@dataclass(frozen=True)
class SinksConfig:
    webhook_url: str | None = opt(None, "POST a JSON event per new attack / update to this URL")
    webhook_secret: str | None = opt(None, "HMAC-SHA256 key of the X-OOB-Signature header",
                                     secret=True)
    webhook_update_every: int = opt(100, "send an update event each time an attack grows by "
                                    "this many hits", min=1)
    webhook_queue_size: int = opt(1000, "events buffered for the webhook; beyond it the oldest "
                                  "are dropped and counted", min=1)
    webhook_timeout_s: float = opt(5.0, "timeout of one webhook delivery", min=0.1)
    webhook_retries: int = opt(5, "delivery attempts before an event is dropped", min=1, max=50)
    jsonl: str | None = opt(None, "write attack events as JSON lines to this file ('-' stdout)")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = opt("info", "log level", choices=("debug", "info", "warning", "error"))
    format: str = opt("json", "log format", choices=("json", "text"))


@dataclass(frozen=True)
class NodeConfig:
    data_dir: str = opt(".oob-node", "directory for the embedded Redis, rule cache, tokens",
                        env="OOB_DATA_DIR")
    event_loop: str = opt("uvloop", "event loop of every role: uvloop (libuv: less CPU per "
                          "request) or asyncio (the standard library's)", choices=EVENT_LOOPS)
    redis: RedisConfig = field(default_factory=RedisConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


SECTIONS = ("redis", "receiver", "queue", "processing", "detection", "aggregation", "sinks",
            "logging")


# ---------------------------------------------------------------- parsing of single values

def _is_optional(tp: Any) -> tuple[bool, Any]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return True, args[0]
    return False, tp


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected a boolean (true/false/on/off), got {raw!r}")


def _parse_number(name: str, kind: type, raw: Any) -> Any:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: expected {kind.__name__}, got a boolean")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def _parse_list(name: str, raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list):
        return list(raw)
    raise ConfigError(f"{name}: expected a list or a comma-separated string, got {raw!r}")


def _parse_value(name: str, tp: Any, raw: Any) -> Any:
    optional, tp = _is_optional(tp)
    if raw is None or (optional and raw == ""):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    origin = typing.get_origin(tp)
    if tp is bool:
        return _parse_bool(name, raw)
    if tp in (int, float):
        return _parse_number(name, tp, raw)
    if tp is str:
        return str(raw)
    if origin is list:
        return _parse_list(name, raw)
    if origin is dict:
        if isinstance(raw, str):
            raw = yaml.safe_load(raw)
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: expected a mapping, got {raw!r}")
        return dict(raw)
    raise ConfigError(f"{name}: unsupported type {tp}")  # pragma: no cover


def _check_bounds(name: str, f: dataclasses.Field[Any], value: Any) -> None:
    meta = f.metadata
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(f"{name}: must be >= {meta['min']}, got {value}")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(f"{name}: must be <= {meta['max']}, got {value}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name}: must be one of {', '.join(meta['choices'])}, got {value!r}")


# ---------------------------------------------------------------- building the config

def _section_fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def env_name(section: str | None, key: str, f: dataclasses.Field[Any]) -> str:
    """The environment variable that overrides ``section.key``."""
    if f.metadata.get("env"):
        return str(f.metadata["env"])
    parts = ["OOB", section, key] if section else ["OOB", key]
    return "_".join(p.upper() for p in parts if p)


def _build_section(cls: type, section: str | None, raw: Mapping[str, Any],
                   env: Mapping[str, str]) -> Any:
    fields = _section_fields(cls)
    unknown = set(raw) - set(fields)
    if unknown:
        where = f"{section}." if section else ""
        raise ConfigError(f"{where}{sorted(unknown)[0]}: unknown option")
    values: dict[str, Any] = {}
    for key, (f, tp) in fields.items():
        if section is None and key in SECTIONS:
            continue
        name = f"{section}.{key}" if section else key
        var = env_name(section, key, f)
        if var in env:
            values[key] = _parse_value(f"{name} (from {var})", tp, env[var])
        elif key in raw:
            values[key] = _parse_value(name, tp, raw[key])
        else:
            continue
        _check_bounds(name, f, values[key])
    return cls(**values)


def _validate(cfg: NodeConfig) -> None:
    for cidr in cfg.receiver.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"receiver.trusted_proxies: {cidr!r} is not a CIDR") from None
    for name in ("receiver.mirror_listen", "receiver.batch_listen",
                 "aggregation.console_listen", "processing.metrics_listen"):
        section, key = name.split(".")
        parse_listen(name, getattr(getattr(cfg, section), key))
    for cls in cfg.detection.disabled_classes:
        if cls not in CLASSES:
            raise ConfigError(f"detection.disabled_classes: unknown class {cls!r}")
    if not cfg.redis.prefix or any(c in cfg.redis.prefix for c in " \r\n"):
        raise ConfigError("redis.prefix: must be non-empty without spaces")


def parse_listen(name: str, value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def build_config(yaml_path: str | None = None, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Defaults, then YAML, then environment, then ``overrides`` ({"section.key": value})."""
    env = dict(os.environ if env is None else env)
    raw = load_yaml(yaml_path or env.get("OOB_CONFIG"))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        target[key] = value
        env.pop(_override_env(section, key), None)
    sections = {}
    for section in SECTIONS:
        sub = raw.get(section) or {}
        if not isinstance(sub, dict):
            raise ConfigError(f"{section}: expected a mapping")
        cls = _section_fields(NodeConfig)[section][1]
        sections[section] = _build_section(cls, section, sub, env)
    top = {k: v for k, v in raw.items() if k not in SECTIONS}
    cfg = dataclasses.replace(_build_section(NodeConfig, None, top, env), **sections)
    _validate(cfg)
    return cfg


def _override_env(section: str, key: str) -> str:
    cls = NodeConfig if not section else _section_fields(NodeConfig)[section][1]
    f, _ = _section_fields(cls)[key]
    return env_name(section or None, key, f)


def with_redis_url(cfg: NodeConfig, url: str) -> NodeConfig:
    """The same config pointing at ``url`` (used once the embedded server is up)."""
    return dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=url))


def describe(cfg: NodeConfig) -> list[tuple[str, str, Any, str]]:
    """(option, env var, effective value, description) for every option; secrets masked."""
    rows: list[tuple[str, str, Any, str]] = []
    for key, (f, _) in _section_fields(NodeConfig).items():
        if key in SECTIONS:
            section_cfg = getattr(cfg, key)
            for sub, (sf, _) in _section_fields(type(section_cfg)).items():
                rows.append(_row(f"{key}.{sub}", env_name(key, sub, sf),
                                 getattr(section_cfg, sub), sf))
        else:
            rows.append(_row(key, env_name(None, key, f), getattr(cfg, key), f))
    return rows


def _row(name: str, var: str, value: Any, f: dataclasses.Field[Any]) -> tuple[str, str, Any, str]:
    if f.metadata.get("secret") and value:
        value = "***"
    return name, var, value, f.metadata["help"]


def read_secret(value: str | None, path: str | None, name: str) -> str | None:
    """A token given directly or in a file (the chart mounts Secrets as files)."""
    if value:
        return value
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
