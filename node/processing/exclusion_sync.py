"""Keeps a worker's exclusions current without a restart.

The aggregation API writes exclusions to the Redis hash ``keys.exclusions`` and bumps the
counter ``keys.exclusions_version``. A worker calls ``refresh()`` once per batch: one GET of
the counter, and only when it moved a reload of the hash (node/detectors/exclusions.py parses
it; a bad stored exclusion is skipped, never fatal). Static exclusions from the config are
applied by the engine itself (``Engine`` reads ``detection.exclusions``), not here.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from node.detectors.exclusions import ExclusionSet, exclusions_version, load_exclusions
from node.queue.keys import Keys

log = logging.getLogger(__name__)


class ExclusionSync:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._version: int | None = None
        self.current: ExclusionSet | None = None

    async def refresh(self) -> ExclusionSet | None:
        """The exclusions to apply now; reloaded only when the version counter moved.

        A Redis error propagates (the worker retries the batch later); until a reload
        succeeds the last loaded set stays in force.
        """
        version = await exclusions_version(self._redis, self._keys)
        if version != self._version:
            loaded = await load_exclusions(self._redis, self._keys)
            self.current = loaded if loaded else None
            self._version = version
            log.info("exclusions loaded", extra={"version": version, "count": len(loaded)})
        return self.current
