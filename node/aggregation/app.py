"""The aggregation listener: one aiohttp app with the API (api.py, export.py), the web console
(static files of ``console/``), ``/metrics``, ``/healthz`` and ``/readyz``, plus the background
work (hits consumer, retention, sinks) opened and closed in ``cleanup_ctx``.

Every response carries the security headers below (a strict CSP: the console has no inline
script or style). ``/api/`` requires ``Authorization: Bearer <token>``, compared in constant
time; health and metrics are open (the chart can restrict them with a NetworkPolicy).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from node.aggregation.aggregator import Aggregator
from node.aggregation.api import DEPS, Deps, add_routes, json_response
from node.aggregation.params import BadParameter
from node.aggregation.sinks import Sinks
from node.aggregation.store import AttackStore
from node.config import NodeConfig
from node.metrics import AggregationMetrics
from node.queue.connection import redis_client
from node.queue.keys import Keys

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).parent / "console"
CONSOLE_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                 ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
                 ".json": "application/json", ".txt": "text/plain"}
SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
SECURITY_HEADERS = {
    # SECURITY: no inline script/style, no framing, no plugins: attacker text shown by the
    # console can never run even if a rendering bug let markup through.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ERROR_NAMES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large"}

CONFIG = web.AppKey("config", NodeConfig)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", AggregationMetrics)
AGGREGATOR = web.AppKey("aggregator", Aggregator)
TOKEN = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


def _error(status: int, message: str, **extra: str) -> web.Response:
    body = {"error": ERROR_NAMES.get(status, "error"), "message": message, **extra}
    return json_response(body, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON: 400 names the parameter, the others say what went wrong."""
    try:
        return await handler(request)
    except BadParameter as exc:
        return _error(400, exc.message, error="bad_parameter", parameter=exc.name)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.text or exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SECURITY: every /api/ path needs the bearer token (checked before routing answers, so
    unauthenticated callers learn nothing about which paths exist)."""
    if request.path.startswith("/api/"):
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        token = request.app[TOKEN]
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()):
            response = _error(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="oob-node"'
            return response
    return await handler(request)


# ---------------------------------------------------------------------- console, health

def console_file(relative: str) -> Path | None:
    """SECURITY: only plain names under console/ (no dot-files, no '..', no absolute paths)."""
    parts = relative.split("/")
    if not all(SEGMENT.fullmatch(part) for part in parts):
        return None
    path = CONSOLE_DIR.joinpath(*parts)
    if path.suffix not in CONSOLE_TYPES or not path.is_file():
        return None
    return path


def _file_response(path: Path | None) -> web.FileResponse:
    if path is None:
        raise web.HTTPNotFound(text="no such console file")
    return web.FileResponse(path, headers={"Content-Type": CONSOLE_TYPES[path.suffix],
                                           "Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.FileResponse:
    return _file_response(console_file("index.html"))


async def console(request: web.Request) -> web.FileResponse:
    return _file_response(console_file(request.match_info["path"]))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    aggregator = request.app[AGGREGATOR]
    ready = aggregator.ready
    try:
        await request.app[DEPS].redis.ping()
    except Exception:  # noqa: BLE001 - any failure means "not ready", never a 500
        ready = False
    return json_response({"ready": ready}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------- lifecycle

async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Redis, store, sinks and the consumer loop; closed in reverse order."""
    cfg = app[CONFIG]
    redis = redis_client(cfg.redis)
    keys = Keys(cfg.redis.prefix)
    store = AttackStore(redis, keys, cfg.aggregation)
    app[DEPS] = Deps(redis, keys, store)
    sinks = Sinks(cfg.sinks, app[METRICS])
    await sinks.start()
    aggregator = app[AGGREGATOR]
    await aggregator.start(redis, keys, store, sinks)
    try:
        yield
    finally:
        await aggregator.close()
        await sinks.close()
        await redis.aclose()


def create_app(cfg: NodeConfig, token: str, registry: CollectorRegistry | None = None, *,
               consume: bool = True) -> web.Application:
    """The aggregation app. ``consume=False`` serves the API without the hits consumer."""
    if not token:
        raise ValueError("an API token is required")
    registry = registry or CollectorRegistry()
    app = web.Application(middlewares=[errors, auth], client_max_size=1024 * 1024)
    app[CONFIG] = cfg
    app[REGISTRY] = registry
    app[METRICS] = AggregationMetrics(registry)
    app[AGGREGATOR] = Aggregator(cfg, app[METRICS], consume=consume)
    app[TOKEN] = token
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_resources)
    add_routes(app)
    app.router.add_get("/", index)
    app.router.add_get("/console/{path:.+}", console)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
