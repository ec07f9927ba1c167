"""The event loop every role runs on: uvloop (libuv) by default, else the standard library's.

Where it sits: ``cli`` (``run`` and the single roles) and each processing worker process
start their top coroutine through ``run``; nothing else creates a loop. Why uvloop: the
receiver's work besides checking records is reading requests, answering and writing to Redis,
which libuv's transports do in C where asyncio's are Python (see README "Performance" for the
bench/ingest.py figures). ``event_loop: asyncio`` is there to rule the loop out when
debugging, and for platforms without a uvloop wheel (Windows).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(main)`` on the configured loop; asyncio's, with a warning, when uvloop
    is configured but not installed."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on the asyncio event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)
