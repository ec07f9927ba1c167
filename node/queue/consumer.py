"""A consumer-group member of one Redis stream: what processing workers use on
``<prefix>:requests`` and aggregation uses on ``<prefix>:hits``.

Delivery is at least once. ``read()`` first takes over entries that another member left
pending for longer than ``claim_idle_ms`` (a worker that died mid-batch: XAUTOCLAIM), then new
entries (XREADGROUP ``>``). An entry is acked only after its results are written, so a crash
loses nothing and a consumer must be idempotent. Entries that cannot be decoded, and entries
delivered more than ``max_deliveries`` times (a batch that keeps killing its worker), go to
the dead-letter stream instead of being handed out again, so one poison entry can never stall
the group.

Entry format (node/queue/keys.py): one field ``ENTRY_FIELD`` holding a msgpack array of maps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from node.queue.keys import (
    DEAD_DELIVERIES_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_SOURCE_ID_FIELD,
    ENTRY_FIELD,
)
from node.queue.streams import read_depth

log = logging.getLogger(__name__)

DEAD_LETTERS_FIELD = "dead_letters"  # field of the counters hash (see keys.counters)
ERROR_MAX_CHARS = 1000  # errors stored with a dead letter are capped (they may quote input)
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # SECURITY: an entry larger than this is not unpacked
PRUNE_IDLE_MS = 3_600_000  # a member silent for an hour with nothing pending has departed
PRUNE_EVERY_S = 60.0  # how often a member looks for departed ones


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry: its items (records or hits), how often it was delivered, raw bytes."""

    id: bytes
    items: list[dict[Any, Any]]
    deliveries: int
    raw: bytes = b""  # the packed batch as stored, kept for the dead-letter stream


class DecodeError(ValueError):
    """A stream entry that is not a msgpack array of maps."""


def decode_batch(raw: bytes) -> list[dict[Any, Any]]:
    """The items of a packed entry; text stays str, msgpack bin stays bytes (exact wire bytes).

    SECURITY: the size is checked first and msgpack's own limits stay bounded by the input
    length, so a hostile entry cannot make the unpacker allocate beyond what it sent.
    """
    if len(raw) > MAX_ENTRY_BYTES:
        raise DecodeError(f"entry of {len(raw)} bytes exceeds {MAX_ENTRY_BYTES}")
    try:
        items = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise DecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DecodeError("not a msgpack array of maps")
    return items


def dead_error(error: str) -> bytes:
    """A dead letter's error field: capped (it may quote attacker input), UTF-8."""
    return error[:ERROR_MAX_CHARS].encode("utf-8", "replace")


def pack_batch(items: Sequence[Any]) -> bytes:
    """The inverse of ``decode_batch`` (the value of ``ENTRY_FIELD``)."""
    return msgpack.packb(list(items), use_bin_type=True)


class GroupConsumer:
    """One member (``consumer_name``) of ``group`` on ``stream``.

    ``counters_key``: hash whose ``dead_letters`` field counts dead letters (``keys.counters``);
    ``dead_maxlen``: approximate MAXLEN of the dead-letter stream (None: unbounded);
    ``claim_entries``: entries taken over per read. 1 by default: an entry that kills whatever
    worker reads it (a record that hangs or crashes the engine) is then retried alone and
    dead-lettered alone, instead of taking the innocent entries of its batch down with it.
    ``prune_idle_ms``: other members idle this long with nothing pending are deleted from the
    group (every restart adds a member name: without this, XINFO CONSUMERS grows forever).
    """

    def __init__(self, redis: aioredis.Redis, stream: str, group: str, consumer_name: str, *,
                 dead_stream: str | None = None, batch_entries: int = 16, block_ms: int = 1000,
                 claim_idle_ms: int = 30000, max_deliveries: int = 5,
                 counters_key: str | None = None, dead_maxlen: int | None = None,
                 claim_entries: int = 1, prune_idle_ms: int = PRUNE_IDLE_MS) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer_name = consumer_name
        self.dead_stream = dead_stream
        self.batch_entries = batch_entries
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.counters_key = counters_key
        self.claim_entries = claim_entries
        self.dead_maxlen = dead_maxlen
        self.dead_letters = 0  # entries this member dead-lettered (monotonic, for metrics)
        # A live member polls every block_ms; never prune one idle less than many claims.
        self.prune_idle_ms = max(prune_idle_ms, 10 * claim_idle_ms, 10 * block_ms)
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim_at = 0.0  # monotonic time of the next XAUTOCLAIM
        self._next_prune_at = 0.0  # monotonic time of the next look for departed members

    # ------------------------------------------------------------------ group

    async def ensure_group(self) -> None:
        """Create the group (and the stream) reading from the start; an existing one is fine."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def backlog(self) -> tuple[int, int]:
        """(lag, pending) of the group in entries: not yet delivered, delivered but not acked."""
        depth = await read_depth(self.redis, self.stream, self.group)
        return depth.lag, depth.pending

    async def prune_consumers(self) -> list[str]:
        """Delete the other members that are idle longer than ``prune_idle_ms`` and hold no
        pending entry (their entries were reclaimed first); returns their names.

        Safe without a transaction: a departed member's pending count can only grow by its
        own read, which would also reset its idle time; a member deleted while alive is
        re-created by its next XREADGROUP.
        """
        pruned = []
        for info in await self.redis.xinfo_consumers(self.stream, self.group):
            name = _text(info.get("name", b""))
            if (name != self.consumer_name and int(info.get("pending", 1)) == 0
                    and int(info.get("idle", 0)) > self.prune_idle_ms):
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)
                pruned.append(name)
        if pruned:
            log.info("removed departed group members", extra={
                "stream": self.stream, "group": self.group, "members": len(pruned)})
        return pruned

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune_at:
            self._next_prune_at = now + PRUNE_EVERY_S
            try:
                await self.prune_consumers()
            except ResponseError as exc:  # no stream or group yet: the read handles that
                log.debug("cannot look for departed members: %s", exc)

    # ------------------------------------------------------------------ reading

    async def read(self) -> list[StreamEntry]:
        """The next entries to handle: reclaimed ones from dead members first, else new ones.

        Entries that cannot be decoded or were delivered too often are dead-lettered here and
        never returned.
        """
        try:
            await self._maybe_prune()
            claimed = await self._claim()
            if claimed:
                return await self._accept(claimed)
            return await self._accept(await self._read_new())
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group was deleted under us (FLUSHALL, operator): recreate it.
            await self.ensure_group()
            return []

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        now = time.monotonic()
        if now < self._next_claim_at:
            return []
        reply = await self.redis.xautoclaim(self.stream, self.group, self.consumer_name,
                                            self.claim_idle_ms, self._claim_cursor,
                                            count=self.claim_entries)
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor
        if _text(cursor) == "0-0" and len(entries) < self.claim_entries:
            # The whole pending list was scanned: nothing can become claimable sooner than
            # a fraction of claim_idle_ms from now, so spare the round trip until then.
            self._next_claim_at = now + self.claim_idle_ms / 4000.0
        gone = [eid for eid, fields in entries if fields is None]
        if gone:  # trimmed by MAXLEN while pending (Redis 6.2 still lists them): nothing to do
            await self.ack(gone)
        live = [(eid, fields) for eid, fields in entries if fields is not None]
        if not live:
            return []
        counts = await self._delivery_counts([eid for eid, _ in live])
        return [(eid, fields, counts.get(eid, 2)) for eid, fields in live]

    async def _delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        """Delivery counts of entries this member just claimed (XAUTOCLAIM incremented them)."""
        pending = await self.redis.xpending_range(self.stream, self.group, min=min(ids),
                                                  max=max(ids), count=len(ids) + 1000,
                                                  consumername=self.consumer_name)
        wanted = set(ids)
        return {p["message_id"]: int(p["times_delivered"]) for p in pending
                if p["message_id"] in wanted}

    async def _read_new(self) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        reply = await self.redis.xreadgroup(self.group, self.consumer_name, {self.stream: ">"},
                                            count=self.batch_entries, block=self.block_ms)
        if isinstance(reply, dict):  # RESP3 shape
            streams = list(reply.values())
        else:
            streams = [entries for _, entries in (reply or [])]
        return [(eid, fields, 1) for entries in streams for eid, fields in entries
                if fields is not None]

    async def _accept(self, raw_entries: Iterable[tuple[bytes, dict[bytes, bytes], int]]
                      ) -> list[StreamEntry]:
        accepted: list[StreamEntry] = []
        for eid, fields, deliveries in raw_entries:
            raw = fields.get(ENTRY_FIELD, b"")
            entry = StreamEntry(eid, [], deliveries, raw)
            if deliveries > self.max_deliveries:
                await self.dead_letter(entry, f"delivered {deliveries} times without an ack "
                                       f"(max_deliveries {self.max_deliveries})")
                continue
            try:
                items = decode_batch(raw) if ENTRY_FIELD in fields else None
            except DecodeError as exc:
                await self.dead_letter(entry, f"undecodable entry: {exc}")
                continue
            if items is None:
                await self.dead_letter(entry, "entry has no batch field")
                continue
            accepted.append(StreamEntry(eid, items, deliveries, raw))
        return accepted

    # ------------------------------------------------------------------ acking

    async def ack(self, ids: Sequence[bytes]) -> int:
        if not ids:
            return 0
        return int(await self.redis.xack(self.stream, self.group, *ids))

    def queue_ack(self, pipe: Any, ids: Sequence[bytes]) -> None:
        """Add the XACK of ``ids`` to a MULTI pipeline (write results and ack atomically)."""
        if ids:
            pipe.xack(self.stream, self.group, *ids)

    async def dead_letter(self, entry: StreamEntry, error: str) -> None:
        """Move ``entry`` to the dead-letter stream with ``error``, ack it and count it, in one
        MULTI: either all three happen or none (then it is simply redelivered). (Processing
        workers dead-letter through their commit script instead: node/processing/commit.py.)"""
        async with self.redis.pipeline(transaction=True) as pipe:
            if self.dead_stream:
                fields = {ENTRY_FIELD: entry.raw,
                          DEAD_ERROR_FIELD: dead_error(error),
                          DEAD_SOURCE_ID_FIELD: entry.id,
                          DEAD_DELIVERIES_FIELD: str(entry.deliveries).encode()}
                pipe.xadd(self.dead_stream, fields, maxlen=self.dead_maxlen, approximate=True)
            pipe.xack(self.stream, self.group, entry.id)
            if self.counters_key:
                pipe.hincrby(self.counters_key, DEAD_LETTERS_FIELD, 1)
            await pipe.execute()
        self.dead_lettered(entry)

    def dead_lettered(self, entry: StreamEntry) -> None:
        """Count and log a dead letter once its transaction committed."""
        self.dead_letters += 1
        # SECURITY: the error may quote attacker input; it is stored, only the id is logged.
        log.warning("dead-lettered entry", extra={"stream": self.stream,
                                                  "entry_id": _text(entry.id),
                                                  "deliveries": entry.deliveries})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
