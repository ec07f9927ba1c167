"""The ``oob-node`` command: builds the config once, then starts one role or all of them.

Roles are async ``serve(cfg, stop)`` functions that run until ``stop`` is set:
``node.receiver.service``, ``node.processing.supervisor``, ``node.aggregation.service``.
``run`` starts the embedded Redis when no redis_url is configured, then all three.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from node import eventloop
from node.config import ConfigError, NodeConfig, build_config, describe, with_redis_url
from node.logs import setup_logging

log = logging.getLogger("node.cli")

Serve = Callable[[NodeConfig, asyncio.Event], Awaitable[None]]
ROLE_MODULES = {
    "receiver": "node.receiver.service",
    "processing": "node.processing.supervisor",
    "aggregation": "node.aggregation.service",
}


def _role(name: str) -> Serve:
    return importlib.import_module(ROLE_MODULES[name]).serve  # type: ignore[no-any-return]


async def _serve_until_signal(cfg: NodeConfig, roles: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_role(name)(cfg, stop), name=name) for name in roles]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]


@contextlib.contextmanager
def embedded_redis(cfg: NodeConfig) -> Iterator[NodeConfig]:
    """Start the private server when no redis_url is set; yield the config pointing at it."""
    if cfg.redis.url:
        yield cfg
        return
    from node.queue.embedded import EmbeddedRedis

    server = EmbeddedRedis(cfg.data_path / "redis", cfg.redis.embedded_maxmemory_mb)
    server.start()
    try:
        yield with_redis_url(cfg, server.url)
    finally:
        server.stop()


def ensure_api_token(cfg: NodeConfig) -> NodeConfig:
    """``run`` without an API token: generate one in <data dir>/api-token and say where."""
    agg = cfg.aggregation
    if agg.api_token or agg.api_token_file:
        return cfg
    path = cfg.data_path / "api-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        path.chmod(0o600)
    print(f"oob-node: API token in {path.resolve()}", file=sys.stderr)
    return dataclasses.replace(cfg, aggregation=dataclasses.replace(agg,
                                                                    api_token_file=str(path)))


def cmd_run(cfg: NodeConfig, args: argparse.Namespace) -> int:
    cfg = ensure_api_token(cfg)
    with embedded_redis(cfg) as live:
        print(f"oob-node: mirror http://{live.receiver.mirror_listen}/  "
              f"console http://{live.aggregation.console_listen}/  "
              f"redis {live.redis.url}", file=sys.stderr)
        eventloop.run(_serve_until_signal(live, ["receiver", "processing", "aggregation"]),
                      live.event_loop)
    return 0


def cmd_role(cfg: NodeConfig, args: argparse.Namespace) -> int:
    with embedded_redis(cfg) if args.embedded else contextlib.nullcontext(cfg) as live:
        if not live.redis.url:
            raise ConfigError("redis.url: required for a single role (or pass --embedded)")
        eventloop.run(_serve_until_signal(live, [args.command]), live.event_loop)
    return 0


def cmd_config(cfg: NodeConfig, args: argparse.Namespace) -> int:
    rows = describe(cfg)
    width = max(len(r[0]) for r in rows)
    for name, var, value, help_text in rows:
        print(f"{name:<{width}}  = {value!r}")
        print(f"{'':<{width}}    {help_text} [{var}]")
    return 0


def _delegate(module: str, func: str) -> Callable[[NodeConfig, argparse.Namespace], int]:
    def run(cfg: NodeConfig, args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), func)(cfg, args))
    return run


COMMANDS: dict[str, Callable[[NodeConfig, argparse.Namespace], int]] = {
    "run": cmd_run,
    "receiver": cmd_role,
    "processing": cmd_role,
    "aggregation": cmd_role,
    "config": cmd_config,
    "rules": _delegate("node.detectors.cli", "main"),
    "replay": _delegate("node.replay", "main"),
    "queue": _delegate("node.queue.inspect", "main"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oob-node", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (env OOB_CONFIG)")
    p.add_argument("--data-dir", help="data directory (env OOB_DATA_DIR)")
    p.add_argument("--redis-url", help="external Redis URL (env OOB_REDIS_URL)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="everything on one machine (embedded Redis by default)")
    for role in ("receiver", "processing", "aggregation"):
        r = sub.add_parser(role, help=f"the {role} role only")
        r.add_argument("--embedded", action="store_true",
                       help="start the embedded Redis when no redis_url is set")
        if role == "processing":
            r.add_argument("--workers", type=int, help="worker processes (env OOB_WORKERS)")
    sub.add_parser("config", help="print the effective configuration with descriptions")
    rules = sub.add_parser("rules", help="rule pack tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rules_sub.add_parser("test", help="run every rule's examples and print a per-rule table")
    replay = sub.add_parser("replay", help="send a labeled JSONL corpus to a mirror listener")
    replay.add_argument("file", help="JSONL file in the corpus format")
    replay.add_argument("--target", default=None, help="host:port (default: mirror_listen)")
    replay.add_argument("--concurrency", type=int, default=32)
    queue = sub.add_parser("queue", help="inspect the request queue")
    queue.add_argument("action", choices=("depth", "peek"), nargs="?", default="depth")
    queue.add_argument("-n", "--count", type=int, default=5, help="records to show with peek")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"data_dir": args.data_dir, "redis.url": args.redis_url,
             "logging.level": args.log_level,
             "processing.workers": getattr(args, "workers", None)}
    return {k: v for k, v in flags.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = build_config(args.config, overrides=_overrides(args))
        setup_logging(cfg.logging, args.command)
        return COMMANDS[args.command](cfg, args)
    except ConfigError as exc:
        print(f"oob-node: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

