"""Demo application behind the Envoy gateway (docker-compose.yml and the Envoy e2e tests).

It answers with known bodies so tests can compare what a client gets through Envoy with what
it gets directly, and so the node has something to mark as an attack outcome:
  GET  /                 a short text page
  ANY  /echo[/...]       JSON: method, path, query, headers (in order), body size and sha256
  GET  /large?size=N     N deterministic bytes (default 1 MiB), with a content-length
  ANY  /upload           drains the body, answers its size and sha256
  GET  /download?file=F  a "vulnerable" file download: F ending in etc/passwd answers 200 with
                         a passwd-like body (a successful path traversal), anything else 404
  GET  /status/{code}    that status with a short body
Runs alone with ``python app.py [--host H] [--port P]`` (the image's aiohttp is enough).
"""

from __future__ import annotations

import argparse
import hashlib

from aiohttp import web

PASSWD = (b"root:x:0:0:root:/root:/bin/bash\n"
          b"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
          b"www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n")
MAX_LARGE = 256 * 1024 * 1024


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes: tests recompute them."""
    block = bytes((i * 31 + 7) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


async def _drain(request: web.Request) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


async def index(request: web.Request) -> web.Response:
    return web.Response(text="oob-node demo app\n")


async def echo(request: web.Request) -> web.Response:
    size, sha = await _drain(request)
    return web.json_response({
        "method": request.method,
        "path": request.raw_path.split("?", 1)[0],
        "query": request.query_string,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_size": size,
        "body_sha256": sha,
    })


async def large(request: web.Request) -> web.Response:
    try:
        size = min(int(request.query.get("size", 1024 * 1024)), MAX_LARGE)
    except ValueError:
        size = 1024 * 1024
    return web.Response(body=pattern(max(size, 0)), content_type="application/octet-stream")


async def upload(request: web.Request) -> web.Response:
    size, sha = await _drain(request)
    return web.json_response({"body_size": size, "body_sha256": sha})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if not 200 <= code <= 599:
        code = 400
    return web.Response(status=code, text=f"status {code}\n")


async def download(request: web.Request) -> web.Response:
    if request.query.get("file", "").endswith("etc/passwd"):
        return web.Response(body=PASSWD, content_type="text/plain")
    return web.Response(status=404, text="no such file\n")


async def fallback(request: web.Request) -> web.Response:
    await _drain(request)
    return web.Response(status=404, text="not found\n")


def create_app() -> web.Application:
    app = web.Application(client_max_size=MAX_LARGE)
    app.router.add_get("/", index)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/large", large)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get(r"/status/{code:\d{3}}", status)
    app.router.add_get("/download", download)
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
