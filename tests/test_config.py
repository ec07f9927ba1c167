"""Configuration: precedence, the fixed environment names, validation naming the option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.config import ConfigError, build_config, describe

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_bind_loopback_and_trust_only_loopback() -> None:
    cfg = build_config(None, env={})
    assert cfg.receiver.mirror_listen == "127.0.0.1:8445"
    assert cfg.receiver.batch_listen == "127.0.0.1:8446"
    assert cfg.aggregation.console_listen == "127.0.0.1:8080"
    assert cfg.receiver.trusted_proxies == ["127.0.0.0/8", "::1/128"]
    assert cfg.redis.url is None
    assert cfg.receiver.max_body_bytes == 64 * 1024
    assert cfg.receiver.max_batch_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("var", "value", "attr", "expected"),
    [
        ("OOB_DATA_DIR", "/tmp/x", ("data_dir",), "/tmp/x"),
        ("OOB_REDIS_URL", "redis://h:6379/0", ("redis", "url"), "redis://h:6379/0"),
        ("OOB_API_TOKEN", "a" * 20, ("aggregation", "api_token"), "a" * 20),
        ("OOB_BATCH_TOKEN", "b" * 20, ("receiver", "batch_token"), "b" * 20),
        ("OOB_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8", ("receiver", "trusted_proxies"),
         ["10.0.0.0/8", "fd00::/8"]),
        ("OOB_REAL_IP_HEADER", "X-Real-IP", ("receiver", "real_ip_header"), "X-Real-IP"),
        ("OOB_REAL_IP_RECURSIVE", "on", ("receiver", "real_ip_recursive"), True),
        ("OOB_WORKERS", "7", ("processing", "workers"), 7),
        ("OOB_MIRROR_LISTEN", "0.0.0.0:9445", ("receiver", "mirror_listen"), "0.0.0.0:9445"),
        ("OOB_BATCH_LISTEN", "0.0.0.0:9446", ("receiver", "batch_listen"), "0.0.0.0:9446"),
        ("OOB_CONSOLE_LISTEN", "[::1]:9080", ("aggregation", "console_listen"), "[::1]:9080"),
        ("OOB_QUEUE_HIGH_WATER", "123", ("queue", "high_water"), 123),
        ("OOB_AGGREGATION_ATTACK_WINDOW_S", "60", ("aggregation", "attack_window_s"), 60.0),
    ],
)
def test_fixed_and_generic_environment_names(var: str, value: str, attr: tuple[str, ...],
                                             expected: object) -> None:
    cfg: object = build_config(None, env={var: value})
    for part in attr:
        cfg = getattr(cfg, part)
    assert cfg == expected


def test_precedence_yaml_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("processing:\n  workers: 3\n  block_ms: 10\nqueue:\n  high_water: 9\n")
    cfg = build_config(str(path), env={"OOB_WORKERS": "4"}, overrides={"queue.high_water": 11})
    assert cfg.processing.workers == 4  # env beats YAML
    assert cfg.processing.block_ms == 10  # YAML beats default
    assert cfg.queue.high_water == 11  # flag beats YAML
    cfg = build_config(str(path), env={"OOB_WORKERS": "4"},
                       overrides={"processing.workers": 5})
    assert cfg.processing.workers == 5  # flag beats env


def test_oob_config_names_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("redis:\n  prefix: tenant1\n")
    assert build_config(None, env={"OOB_CONFIG": str(path)}).redis.prefix == "tenant1"


@pytest.mark.parametrize(
    ("env", "yaml_text", "option"),
    [
        ({"OOB_WORKERS": "many"}, "", "processing.workers"),
        ({"OOB_WORKERS": "0"}, "", "processing.workers"),
        ({"OOB_REAL_IP_RECURSIVE": "perhaps"}, "", "receiver.real_ip_recursive"),
        ({"OOB_TRUSTED_PROXIES": "10.0.0.0/8,not-a-cidr"}, "", "receiver.trusted_proxies"),
        ({"OOB_MIRROR_LISTEN": "8445"}, "", "receiver.mirror_listen"),
        ({}, "receiver:\n  max_body_bytes: -1\n", "receiver.max_body_bytes"),
        ({}, "receiver:\n  no_such_option: 1\n", "receiver.no_such_option"),
        ({}, "logging:\n  level: loud\n", "logging.level"),
        ({}, "detection:\n  disabled_classes: [sqli, nonsense]\n", "detection.disabled_classes"),
        ({}, "queue: 5\n", "queue"),
    ],
)
def test_invalid_values_name_the_option(tmp_path: Path, env: dict[str, str], yaml_text: str,
                                        option: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=re.escape(option)):
        build_config(str(path) if yaml_text else None, env=env)


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("receiver: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        build_config(str(path), env={})


def test_describe_masks_secrets_and_documents_every_option() -> None:
    cfg = build_config(None, env={"OOB_API_TOKEN": "supersecret-token-value"})
    rows = {name: (var, value, help_text) for name, var, value, help_text in describe(cfg)}
    assert rows["aggregation.api_token"][1] == "***"
    assert all(help_text for _, _, help_text in rows.values())
    assert rows["processing.workers"][0] == "OOB_WORKERS"


def test_readme_lists_every_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name, *_ in describe(build_config(None, env={}))
               if f"`{name}`" not in readme]
    assert not missing, f"README config table lacks {missing}"
