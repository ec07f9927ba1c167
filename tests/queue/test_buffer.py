"""RunBuffer: runs taken whole and in order, entries never split a run, sources counted."""

from __future__ import annotations

import msgpack
import pytest

from node.queue.buffer import RunBuffer, array_header, count_sources


def run_of(first: int, count: int) -> bytes:
    return b"".join(msgpack.packb({"i": i}) for i in range(first, first + count))


def filled(counts: list[int]) -> RunBuffer:
    buffer = RunBuffer()
    first = 0
    for n in counts:
        buffer.add(run_of(first, n), n, "lua" if n > 1 else "mirror")
        first += n
    return buffer


@pytest.mark.parametrize("counts,limit,taken", [
    ([1, 1, 1], 2, 2),
    ([100, 100, 28], 210, 200),
    ([300, 5], 100, 300),  # at least one run, even above the limit
    ([3, 4], 1000, 7),
])
def test_take_returns_whole_runs_in_order_up_to_the_limit(counts, limit, taken):
    buffer = filled(counts)
    before = buffer.size
    got = buffer.take(limit)
    assert got.records == taken == sum(got.counts)
    records = [r["i"] for run in got.runs for r in _feed(run)]
    assert records == list(range(taken))
    assert buffer.records == sum(counts) - taken and buffer.size == before - got.size


def _feed(data: bytes) -> msgpack.Unpacker:
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    return unpacker


@pytest.mark.parametrize("counts,per,entries", [
    ([1] * 7, 3, [3, 3, 1]),
    ([100, 100, 28], 100, [100, 100, 28]),
    ([60, 60, 30], 100, [60, 90]),
    ([150, 1], 100, [150, 1]),  # a run larger than an entry is an entry of its own
])
def test_entries_group_runs_without_splitting_them(counts, per, entries):
    got = filled(counts).take(10_000)
    grouped = list(got.entries(per))
    assert [n for n, _ in grouped] == entries
    for n, runs in grouped:
        value = array_header(n) + b"".join(runs)
        assert len(msgpack.unpackb(value)) == n


def test_sources_are_counted_over_single_records_and_runs():
    buffer = RunBuffer()
    buffer.add(b"\x80", 1, "mirror")
    buffer.add(b"\x80\x80", 2, {"lua": 1, "har": 1})
    buffer.add(b"\x80", 1, "mirror")
    assert buffer.take(10).sources == {"mirror": 2, "lua": 1, "har": 1}
    assert count_sources([]) == {}


@pytest.mark.parametrize("n", [0, 15, 16, 65535, 65536])
def test_array_header_sizes(n):
    assert array_header(n) == msgpack.packb([None] * n)[:len(array_header(n))]
