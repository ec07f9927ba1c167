"""Record ids: ULIDs (26 Crockford base32 characters, sortable by creation time).

The receiver gives every record one (``RequestRecord.id``); processing derives hit ids from
it. Monotonic within one generator: ids made in the same millisecond increase, so records of
one receiver sort in arrival order. Hot path: the time part is encoded once per millisecond,
and ``many`` names a whole batch of records for one clock read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [chr(a) + chr(b) for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 chars
_LOW_BITS = 20  # the low 20 random bits are encoded per id, the rest once per millisecond
_LOW_MASK = (1 << _LOW_BITS) - 1


def _encode_time(ms: int) -> str:
    """48-bit milliseconds as 10 characters (the first carries 3 bits)."""
    return "".join(chr(_CROCKFORD[(ms >> shift) & 31]) for shift in range(45, -1, -5))


def _encode_bits(value: int, pairs: int) -> str:
    return "".join(_PAIRS[(value >> (10 * i)) & 1023] for i in range(pairs - 1, -1, -1))


class UlidGenerator:
    """Not thread-safe; one per event loop (the receiver owns one)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ms = -1
        self._high = 0  # random bits 79..20
        self._low = 0  # random bits 19..0
        self._prefix = ""  # time + high random bits, encoded

    def new(self) -> str:
        ms = int(self._clock() * 1000)
        if ms > self._ms:
            self._ms = ms
            rnd = int.from_bytes(os.urandom(10), "big")
            self._high = rnd >> _LOW_BITS
            # Top low bit clear leaves room to increment within the millisecond.
            self._low = (rnd & _LOW_MASK) >> 1
            self._set_prefix()
        else:
            self._low += 1
            if self._low > _LOW_MASK:  # carry into the high part (rare)
                self._low = 0
                self._high = (self._high + 1) & ((1 << 60) - 1)
                self._set_prefix()
        low = self._low
        return self._prefix + _PAIRS[low >> 10] + _PAIRS[low & 1023]

    def many(self, n: int) -> list[str]:
        """``n`` ids, as ``n`` calls of ``new`` would give them, for one clock read (the batch
        listener names a whole batch at once)."""
        if n <= 0:
            return []
        first = self.new()
        low = self._low
        if low + n - 1 > _LOW_MASK:  # would carry into the high bits (rare): one by one
            return [first, *(self.new() for _ in range(n - 1))]
        self._low = low + n - 1
        ids = [first]
        start, end = low + 1, low + n
        while start < end:  # per run of ids sharing the bits above the last 10: one map in C
            high = start >> 10
            stop = min(end, (high + 1) << 10)
            head = self._prefix + _PAIRS[high]
            ids += map(head.__add__, _PAIRS[start & 1023:((stop - 1) & 1023) + 1])
            start = stop
        return ids

    def _set_prefix(self) -> None:
        self._prefix = _encode_time(self._ms) + _encode_bits(self._high, 6)


def ulid_time(ulid: str) -> float:
    """Seconds since the epoch encoded in a ULID (for tests and tools)."""
    ms = 0
    for ch in ulid[:10].upper().encode("ascii"):
        ms = (ms << 5) | _CROCKFORD.index(ch)
    return ms / 1000.0
