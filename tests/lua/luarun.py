"""Runs the Lua plugin's unit-test harnesses (tests/lua/*.lua) under Debian's LuaJIT.

The harnesses print msgpack as hex lines, which the tests decode with Python's msgpack: the
encoder under test is also checked on its own in test_lua_msgpack.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

HERE = Path(__file__).parent
LUAJIT = shutil.which("luajit")


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def run_lua(script: str, *args: str, stdin: str = "", timeout: float = 30) -> list[str]:
    """Output lines of tests/lua/<script> (fails the test on a non-zero exit)."""
    if LUAJIT is None:
        pytest.skip("luajit not installed (scripts/test.sh installs Debian's luajit)")
    proc = subprocess.run([LUAJIT, str(HERE / script), *args], input=stdin.encode(),
                          capture_output=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode().splitlines()
