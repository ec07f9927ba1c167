"""The aggregation role: ``serve(cfg, stop)`` runs the aggregation app (app.py) on
``aggregation.console_listen`` until ``stop`` is set: hits consumer, API, console, metrics.

Run by ``oob-node aggregation`` and, with the other roles, by ``oob-node run``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from node.aggregation.app import create_app
from node.config import ConfigError, NodeConfig, parse_listen, read_secret

log = logging.getLogger(__name__)


def api_token(cfg: NodeConfig) -> str:
    """SECURITY: the API never runs open; no token configured is a start-up error."""
    agg = cfg.aggregation
    token = read_secret(agg.api_token, agg.api_token_file, "aggregation.api_token")
    if not token:
        raise ConfigError("aggregation.api_token: required (or aggregation.api_token_file; "
                          "`oob-node run` generates one)")
    return token


async def serve(cfg: NodeConfig, stop: asyncio.Event) -> None:
    app = create_app(cfg, api_token(cfg))
    host, port = parse_listen("aggregation.console_listen", cfg.aggregation.console_listen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("aggregation listening", extra={"listen": cfg.aggregation.console_listen})
        await stop.wait()
    finally:
        await runner.cleanup()
