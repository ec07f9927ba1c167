"""How the metrics of N worker processes reach one /metrics endpoint.

Each worker counts in its own private ``CollectorRegistry`` (``ProcessingMetrics``) and, once a
second and when it exits, sends a snapshot of its cumulative samples to the supervisor over its
own one-way pipe (``TelemetrySender``). The supervisor keeps the last snapshot of each live
worker and sums them, sample by sample, in ``WorkerSamples``, a collector registered in the
supervisor's registry next to its own gauges. When a worker dies its last snapshot is folded
into a retired total, so counters never go backwards across restarts; what a killed worker
counted after its last push (at most a second) is lost from the metrics, never from the queue.

Why not prometheus_client's multiprocess mode: it is switched on by an environment variable
read at import time (a process-wide global) and needs a shared directory cleaned by hand. A
pipe per worker also means a worker killed mid-write can only break its own channel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# (family name, sample name, sorted label pairs)
SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass
class Snapshot:
    """What a worker sends: its cumulative samples and whether its rules are loaded."""

    slot: int
    pid: int
    ready: bool
    families: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (type, help)
    samples: dict[SampleKey, float] = field(default_factory=dict)


def take_snapshot(registry: CollectorRegistry, slot: int, ready: bool) -> Snapshot:
    snap = Snapshot(slot, os.getpid(), ready)
    for family in registry.collect():
        snap.families[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            if sample.name.endswith("_created"):  # a sum of creation times means nothing
                continue
            key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
            snap.samples[key] = sample.value
    return snap


class TelemetrySender:
    """Worker side: push snapshots to the supervisor."""

    def __init__(self, conn: Connection, registry: CollectorRegistry, slot: int) -> None:
        self._conn = conn
        self._registry = registry
        self._slot = slot
        self.ready = False

    def send(self) -> bool:
        """False when the supervisor's end is gone (the worker should stop)."""
        try:
            self._conn.send(take_snapshot(self._registry, self._slot, self.ready))
        except (OSError, ValueError):  # broken pipe, or the connection was closed
            return False
        return True


class WorkerSamples(Collector):
    """Supervisor side: the sum of every worker's latest snapshot plus retired totals."""

    def __init__(self) -> None:
        self._live: dict[int, Snapshot] = {}  # pid -> last snapshot
        self._retired: dict[SampleKey, float] = {}
        self._families: dict[str, tuple[str, str]] = {}

    def update(self, snap: Snapshot) -> None:
        self._live[snap.pid] = snap
        self._families.update(snap.families)

    def retire(self, pid: int) -> None:
        """The worker ``pid`` exited: keep what it counted, forget that it is live."""
        snap = self._live.pop(pid, None)
        if snap is None:
            return
        for key, value in snap.samples.items():
            if not _is_gauge(self._families, key[0]):
                self._retired[key] = self._retired.get(key, 0.0) + value

    def ready(self, pid: int) -> bool:
        snap = self._live.get(pid)
        return bool(snap and snap.ready)

    def totals(self) -> dict[SampleKey, float]:
        total = dict(self._retired)
        for snap in list(self._live.values()):
            for key, value in snap.samples.items():
                total[key] = total.get(key, 0.0) + value
        return total

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for (name, sample, labels), value in self.totals().items():
            kind, doc = self._families.get(name, ("untyped", ""))
            metric = families.get(name)
            if metric is None:
                metric = families[name] = Metric(name, doc, kind)
            metric.add_sample(sample, dict(labels), value)
        yield from families.values()


def _is_gauge(families: dict[str, tuple[str, str]], name: str) -> bool:
    return families.get(name, ("", ""))[0] == "gauge"


def drain(conn: Connection, samples: WorkerSamples) -> bool:
    """Apply every snapshot waiting on ``conn``; False once the worker's end is closed."""
    try:
        while conn.poll():
            message: Any = conn.recv()
            if isinstance(message, Snapshot):
                samples.update(message)
    except (EOFError, OSError):
        return False
    return True
