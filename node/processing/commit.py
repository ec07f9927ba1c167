"""Committing what a processing worker made of a batch: once per stream entry, whoever wins.

Where it sits: ``worker.Worker`` analyzes the entries it read into ``EntryOutcome``s and hands
them to ``commit``, which runs one Lua script: per entry, ``XACK`` first, and only when that
ack is the one that removed the entry from the pending list does the script ``XADD`` the
entry's hits (or its dead letter) and count them in ``<prefix>:counters``.

Why a script and not MULTI/EXEC: an entry can be analyzed twice, by a worker that was slow
beyond ``processing.claim_idle_ms`` and by the worker that reclaimed it. MULTI would emit and
count both; the hit ids are the same (aggregation keeps one), but the ``hits`` counter and the
hits stream would hold the entry twice. With the ack deciding inside the script, the second
commit of an entry writes nothing. A worker killed before its commit has written nothing
either, as before: the entry stays pending and is reclaimed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from node.queue.consumer import DEAD_LETTERS_FIELD, StreamEntry, dead_error, pack_batch
from node.queue.keys import (
    DEAD_DELIVERIES_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_SOURCE_ID_FIELD,
    ENTRY_FIELD,
    Keys,
)
from node.records import Hit

HITS_FIELD = "hits"  # field of keys.counters

# KEYS: requests stream, hits stream, dead-letter stream, counters hash.
# ARGV: group, hits maxlen, dead maxlen, the field names (batch, error, entry_id, deliveries,
# hits counter, dead_letters counter), then per entry: id, hit count, number of hit payloads,
# the payloads, and "" or the dead letter's error and delivery count.
# Returns the ids of the entries this call acked.
COMMIT_SCRIPT = """
local group, hits_max, dead_max = ARGV[1], ARGV[2], ARGV[3]
local f_batch, f_error, f_id, f_deliveries = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local c_hits, c_dead = ARGV[8], ARGV[9]
local hits, dead, committed = 0, 0, {}
local i = 10
while i <= #ARGV do
  local id, n, payloads = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local first = i + 3
  local error = ARGV[first + payloads]
  i = first + payloads + 1
  if error ~= '' then i = i + 2 end
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    committed[#committed + 1] = id
    for k = first, first + payloads - 1 do
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', hits_max, '*', f_batch, ARGV[k])
    end
    hits = hits + n
    if error ~= '' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', dead_max, '*', f_batch, ARGV[i - 2],
                 f_error, error, f_id, id, f_deliveries, ARGV[i - 1])
      dead = dead + 1
    end
  end
end
if hits > 0 then redis.call('HINCRBY', KEYS[4], c_hits, hits) end
if dead > 0 then redis.call('HINCRBY', KEYS[4], c_dead, dead) end
return committed
"""


@dataclass
class EntryOutcome:
    """One analyzed entry: its hits, and the error that dead-letters it (None: acked)."""

    entry: StreamEntry
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class CommitLimits:
    hits_maxlen: int
    dead_maxlen: int
    hits_per_entry: int  # hits packed into one hits-stream entry (queue.records_per_entry)


def commit_script(redis: aioredis.Redis) -> AsyncScript:
    """The script, registered once per client (EVALSHA; loaded again after a restart)."""
    return redis.register_script(COMMIT_SCRIPT)


async def commit(script: AsyncScript, keys: Keys, group: str, limits: CommitLimits,
                 outcomes: Sequence[EntryOutcome]) -> list[EntryOutcome]:
    """Ack every entry of ``outcomes`` and write its hits / dead letter, each only if this
    call's ack removed it from the pending list; returns the outcomes committed here."""
    if not outcomes:
        return []
    args: list[bytes | str | int] = [
        group, limits.hits_maxlen, limits.dead_maxlen, ENTRY_FIELD, DEAD_ERROR_FIELD,
        DEAD_SOURCE_ID_FIELD, DEAD_DELIVERIES_FIELD, HITS_FIELD, DEAD_LETTERS_FIELD]
    for outcome in outcomes:
        args += _entry_args(outcome, limits.hits_per_entry)
    committed = await script(keys=[keys.requests, keys.hits, keys.requests_dead,
                                   keys.counters], args=args)
    done = set(committed)  # entry ids, as the client returns them (bytes) like entry.id
    return [o for o in outcomes if o.entry.id in done]


def _entry_args(outcome: EntryOutcome, per_payload: int) -> list[bytes | str | int]:
    payloads = [pack_batch(chunk) for chunk in _chunks(outcome.hits, per_payload)]
    args: list[bytes | str | int] = [outcome.entry.id, len(outcome.hits), len(payloads),
                                     *payloads]
    if outcome.error is None:
        return [*args, ""]
    # SECURITY: the error may quote attacker input: capped, stored, shown escaped. Never
    # empty: "" is the script's "no dead letter".
    error = dead_error(outcome.error) or b"error"
    return [*args, error, outcome.entry.raw, str(outcome.entry.deliveries)]


def _chunks(items: list[Hit], size: int) -> Iterator[list[Hit]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
