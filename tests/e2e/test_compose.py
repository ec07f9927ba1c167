"""docker-compose.yml: valid Compose, and the topology the Envoy end-to-end tests run.

There is no Docker engine here, so the file is checked statically: against the Compose
specification schema vendored in `check-jsonschema` (no network), and for the wiring that
matters: the envoy service runs the same config template and render script as
tests/e2e/envoy_harness.py, with the repository's lua/ on package.path, and the node roles
are built from the repository's Dockerfile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

needs_compose = pytest.mark.skipif(not COMPOSE.exists(),
                                   reason="docker-compose.yml not written yet")


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("check-jsonschema")
    exe = str(binary) if binary.exists() else shutil.which("check-jsonschema")
    if not exe:
        pytest.fail("check-jsonschema missing: install the test extra")
    return subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Host path (resolved against the repository) -> container path of bind mounts."""
    out: dict[Path, str] = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else ""
        else:
            source, target = vol.get("source", ""), vol.get("target", "")
        if source.startswith((".", "/")):
            out[(ROOT / source).resolve()] = target
    return out


def envoy_service(spec: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in spec["services"].values()
             if "envoy" in str(s.get("image", "")) + str(s.get("build", ""))]
    assert len(found) == 1, "exactly one service runs Envoy"
    return found[0]


@needs_compose
def test_compose_file_matches_the_compose_spec() -> None:
    proc = check_jsonschema(COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  app:\n    image: x\n    ports: 8080\n    restart: sometimes\n")
    assert check_jsonschema(bad).returncode != 0


@needs_compose
def test_envoy_runs_the_config_of_the_e2e_tests() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import envoy_harness
    finally:
        sys.path.pop(0)
    binds = mounts(envoy_service(compose()))

    def mounted(path: Path) -> bool:
        path = path.resolve()
        return any(path == src or src in path.parents for src in binds)

    for used_by_tests in (envoy_harness.TEMPLATE, envoy_harness.RENDER, envoy_harness.LUA_DIR):
        assert used_by_tests.exists() and mounted(used_by_tests), used_by_tests


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def render_defaults() -> dict[str, str]:
    """The defaults of deploy/envoy/render.sh (`: "${NAME:=value}"` lines)."""
    text = (ROOT / "deploy" / "envoy" / "render.sh").read_text(encoding="utf-8")
    return dict(re.findall(r'^: "\$\{(\w+):=([^}]*)\}"', text, re.M))


@needs_compose
def test_envoy_reaches_the_services_of_the_file() -> None:
    """The gateway's upstream, mirror and batch hosts are services of this compose file,
    and the plugin's token is the receiver's."""
    spec = compose()
    env = render_defaults() | environment(envoy_service(spec))
    services = set(spec["services"])
    for var in ("APP_HOST", "MIRROR_HOST", "BATCH_HOST"):
        assert env[var] in services, (var, env[var], services)
    receiver_env = environment(spec["services"][env["BATCH_HOST"]])
    if env.get("BATCH_TOKEN") and "OOB_BATCH_TOKEN" in receiver_env:
        assert env["BATCH_TOKEN"] == receiver_env["OOB_BATCH_TOKEN"]
    # the receiver listens where Envoy sends: its env, else the image's ENV (Dockerfile)
    image_env = dict(re.findall(r"(OOB_\w+_LISTEN)=(\S+)",
                                (ROOT / "Dockerfile").read_text(encoding="utf-8")))
    for port_var, listen_var in (("MIRROR_PORT", "OOB_MIRROR_LISTEN"),
                                 ("BATCH_PORT", "OOB_BATCH_LISTEN")):
        listen = receiver_env.get(listen_var, image_env[listen_var])
        assert listen == f"0.0.0.0:{env[port_var]}", (listen_var, listen)


@needs_compose
def test_node_roles_are_built_from_the_dockerfile() -> None:
    services = compose()["services"]
    built = {name: s for name, s in services.items() if s.get("build")}
    assert built, "the node is built from the repository"
    for name, s in built.items():
        build = s["build"] if isinstance(s["build"], dict) else {"context": s["build"]}
        context = (ROOT / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.exists(), name
    commands = " ".join(str(s.get("command", "")) for s in services.values())
    assert any(role in commands for role in ("run", "receiver", "processing", "aggregation"))
