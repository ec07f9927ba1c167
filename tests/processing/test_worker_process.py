"""Worker processes (multiprocessing spawn, as the supervisor starts them) and real signals:
SIGKILL mid-batch loses nothing, SIGTERM commits the batch in progress and exits 0."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from proc_helpers import (
    ATTACK_QUERY,
    SLOW_MARK,
    STALL_MARK,
    drained,
    fake_analyze,
    fake_factory,
    hits_in_stream,
    put,
    record,
    slow_factory,
    stalling_engine_factory,
    stalling_factory,
    wait_for,
)

from node.processing.telemetry import WorkerSamples, drain
from node.processing.worker import process_main
from node.queue.keys import Keys

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def procs():
    """Worker processes started by a test; any still alive at the end are killed."""
    started: list = []
    yield started
    for proc, conn in started:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        conn.close()


def start(procs, cfg, factory, name: str):
    receiver, sender = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=process_main, args=(cfg, 0, sender, factory, name), daemon=True)
    proc.start()
    sender.close()
    procs.append((proc, receiver))
    return proc, receiver


def config(make_config, **kw):
    base = {"processing.block_ms": 50, "processing.claim_idle_ms": 100,
            "processing.max_deliveries": 3, "processing.batch_entries": 4}
    base.update(kw)
    cfg = make_config(**base)
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def expected_ids(records, analyze) -> set[str]:
    """Hit ids of one direct in-process analysis of the records (application: the host)."""
    return {h["id"] for r in records for h in analyze(r, None, r["host"])}


@pytest.mark.parametrize("kind", ["fake", "engine"])
async def test_sigkill_mid_batch_loses_nothing_and_counts_once(make_config, redis, prefix,
                                                                procs, kind, request):
    cfg = config(make_config)
    if kind == "engine":
        cfg = request.getfixturevalue("seed_cache")(cfg)
        analyze = request.getfixturevalue("engine").analyze
        doomed_factory, survivor_factory = stalling_engine_factory, None  # None: real engine
    else:
        analyze, doomed_factory, survivor_factory = fake_analyze, stalling_factory, fake_factory
    keys = Keys(prefix)
    first = [record(f"a{i}", query=ATTACK_QUERY) for i in range(5)]
    await put(redis, prefix, first)
    doomed, _ = start(procs, cfg, doomed_factory, "doomed")
    await wait_for(lambda: drained(redis, prefix), timeout=60)
    # The doomed worker committed the first entry; now it stalls inside the second one.
    second = [record(f"b{i}", query=ATTACK_QUERY if i % 2 else "q=fine") for i in range(6)]
    second.insert(2, record("stall", path="/stall", query=ATTACK_QUERY))
    await put(redis, prefix, second)
    mark = Path(cfg.data_dir) / STALL_MARK
    await wait_for(lambda: _exists(mark), timeout=30)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(timeout=10)
    assert doomed.exitcode == -signal.SIGKILL
    start(procs, cfg, survivor_factory, "survivor")
    await wait_for(lambda: drained(redis, prefix), timeout=60)
    ids = [h["id"] for h in await hits_in_stream(redis, prefix)]
    expected = expected_ids(first + second, analyze)
    assert expected  # the records do produce hits
    assert sorted(ids) == sorted(expected)  # every hit, each exactly once
    assert await redis.hget(keys.counters, "hits") == str(len(ids)).encode()
    assert await redis.xlen(keys.requests_dead) == 0


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_sigterm_commits_the_batch_in_progress_and_exits_0(make_config, redis, prefix,
                                                                  procs):
    cfg = config(make_config, **{"processing.batch_entries": 1})
    records = [record(f"s{i}", query="q=attack" if i % 3 else "q=ok") for i in range(30)]
    await put(redis, prefix, records)
    later = record("later", query="q=attack")
    await put(redis, prefix, [later])
    proc, conn = start(procs, cfg, slow_factory, "graceful")
    await wait_for(lambda: _exists(Path(cfg.data_dir) / SLOW_MARK), timeout=30)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    [info] = await redis.xinfo_groups(Keys(prefix).requests)
    assert info["pending"] == 0  # what it had read, it committed
    read_records = records if info["lag"] == 1 else [*records, later]
    hits = await hits_in_stream(redis, prefix)
    assert sorted(h["id"] for h in hits) == sorted(expected_ids(read_records, fake_analyze))
    # Its final metrics snapshot reached the pipe before exit.
    samples = WorkerSamples()
    drain(conn, samples)
    totals = samples.totals()
    assert totals[("oob_processing_records", "oob_processing_records_total", ())] == len(
        read_records)
