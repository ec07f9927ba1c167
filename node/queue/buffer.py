"""Packed records waiting in the receiver for the stream writer, kept as runs.

Where it sits: ``streams.StreamWriter`` holds one ``RunBuffer``. The mirror listener adds one
record at a time; the batch listener adds runs: up to ``records_per_entry`` packed records
written back to back (one msgpack map each), as it built them from a batch. The writer takes
whole runs and groups them into stream entries (a msgpack array header, then the runs).

Why runs: a batch of 500 records handed over as 500 bytes objects cost a join per record,
per-record list and source bookkeeping here, and another copy into each entry; a run is
copied once when the batch listener joins it, and once more into the Redis payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Sources = str | dict[str, int]  # the source of a single record, else records by source


def array_header(n: int) -> bytes:
    """msgpack array header for ``n`` items (fixarray, array 16 or array 32)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


@dataclass(slots=True)
class Taken:
    """Runs taken from the buffer, with their record counts and sources."""

    runs: list[bytes]
    counts: list[int]
    records: int
    size: int
    sources: dict[str, int]

    def entries(self, per: int) -> Iterator[tuple[int, list[bytes]]]:
        """(records, runs) of each entry: consecutive runs up to ``per`` records (a run is
        never split; one larger than ``per`` is an entry of its own)."""
        group: list[bytes] = []
        count = 0
        for run, n in zip(self.runs, self.counts, strict=True):
            if group and count + n > per:
                yield count, group
                group, count = [], 0
            group.append(run)
            count += n
        if group:
            yield count, group


class RunBuffer:
    """FIFO of runs with running totals (records, bytes)."""

    def __init__(self) -> None:
        self._runs: list[bytes] = []
        self._counts: list[int] = []
        self._sources: list[Sources] = []
        self.records = 0
        self.size = 0

    def add(self, run: bytes, count: int, sources: Sources) -> None:
        self._runs.append(run)
        self._counts.append(count)
        self._sources.append(sources)
        self.records += count
        self.size += len(run)

    def take(self, limit: int) -> Taken:
        """The oldest runs, up to ``limit`` records (always at least one run)."""
        end, records = 0, 0
        for n in self._counts:
            if end and records + n > limit:
                break
            end, records = end + 1, records + n
        # Not runs[end:]: when Redis lags the buffer is long, and a copy of the rest would
        # touch every run's refcount on each flush; del only moves the pointers.
        runs, counts, sources = self._runs[:end], self._counts[:end], self._sources[:end]
        del self._runs[:end], self._counts[:end], self._sources[:end]
        size = sum(map(len, runs))
        self.records -= records
        self.size -= size
        return Taken(runs, counts, records, size, count_sources(sources))

    def clear(self) -> None:
        self._runs, self._counts, self._sources = [], [], []
        self.records = self.size = 0


def count_sources(sources: Iterable[Sources]) -> dict[str, int]:
    """Records by source over many runs (plain dicts: a Counter per run cost more here)."""
    total: dict[str, int] = {}
    for item in sources:
        if type(item) is str:
            total[item] = total.get(item, 0) + 1
        else:
            for source, n in item.items():  # type: ignore[union-attr]
                total[source] = total.get(source, 0) + n
    return total
