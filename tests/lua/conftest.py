"""Fixtures of the Lua plugin's unit tests (helpers in luarun.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from luarun import run_lua, unpack


@pytest.fixture
def scenario() -> Callable[..., Any]:
    """Run one named scenario of tests/lua/scenarios.lua; returns its decoded result."""

    def run(name: str, *args: str) -> Any:
        lines = run_lua("scenarios.lua", name, *args)
        assert len(lines) == 1, lines
        return unpack(bytes.fromhex(lines[0]))

    return run
