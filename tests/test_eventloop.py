"""node.eventloop: the configured loop is the one the roles run on."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from node import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("loop,expected", [("uvloop", uvloop.Loop),
                                           ("asyncio", asyncio.SelectorEventLoop)])
def test_runs_on_the_configured_loop(loop: str, expected: type) -> None:
    assert issubclass(eventloop.run(_loop_type(), loop), expected)


def test_without_uvloop_installed_asyncio_runs_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    loop_type = eventloop.run(_loop_type(), "uvloop")
    assert not issubclass(loop_type, uvloop.Loop)
    assert "uvloop is not installed" in caplog.text
