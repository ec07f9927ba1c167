"""Every Prometheus metric of the node, one class per role, each bound to a registry passed in
(no global registry: tests get a fresh one each).

Conventions: ``oob_`` prefix, base units (seconds, bytes), ``_total`` counters, labels only
from closed sets (class, source, reason), never client IPs, hosts or paths.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from node.config import CLASSES

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Closed label sets, so a hostile value can never create a new series.
REJECT_REASONS = ("bad_msgpack", "bad_shape", "bad_record", "unauthorized", "too_large",
                  "too_many_records", "header_flood", "header_too_long", "bad_request",
                  "overloaded", "internal")
SHED_REASONS = ("high_water", "redis_down", "buffer_full", "inflight")


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter("oob_requests_received_total",
                                "Requests (records) received, by source", ["source"],
                                registry=registry)
        self.rejected = Counter("oob_requests_rejected_total",
                                "Requests or records rejected as invalid, by reason", ["reason"],
                                registry=registry)
        self.shed = Counter("oob_requests_shed_total",
                            "Records answered but not queued because of overload, by reason",
                            ["reason"], registry=registry)
        self.enqueued = Counter("oob_records_enqueued_total", "Records written to the stream",
                                registry=registry)
        self.body_truncated = Counter("oob_bodies_truncated_total",
                                      "Bodies cut at max_body_bytes", registry=registry)
        self.enqueue_latency = Histogram("oob_enqueue_latency_seconds",
                                         "Time from receipt to XADD acknowledged",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("oob_queue_depth_records",
                                 "Records waiting in the requests stream (group lag + pending)",
                                 registry=registry)
        self.buffered = Gauge("oob_receiver_buffered_records",
                              "Records buffered in the receiver, not yet in Redis",
                              registry=registry)
        self.redis_up = Gauge("oob_redis_up", "1 when the last Redis command succeeded",
                              registry=registry)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for reason in SHED_REASONS:
            self.shed.labels(reason)


# Per-request analysis times are much shorter than enqueue latencies.
SCAN_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0)
PROCESSING_ERRORS = ("analyze", "engine", "redis")
HIT_CLASSES = CLASSES  # a hit of any other class (a custom pack) is counted as "other"


class ProcessingMetrics:
    """Counted inside each worker process, in a private registry. The supervisor sums the
    samples of its N workers into its own /metrics (node/processing/telemetry.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter("oob_processing_records_total",
                               "Request records analyzed (acked or dead-lettered)",
                               registry=registry)
        self.hits = Counter("oob_processing_hits_total", "Hits emitted, by class", ["class"],
                            registry=registry)
        self.scan_seconds = Histogram("oob_processing_scan_seconds",
                                      "Analysis time of one request record",
                                      buckets=SCAN_BUCKETS, registry=registry)
        self.budget_overruns = Counter("oob_processing_budget_overruns_total",
                                       "Records whose analysis took longer than "
                                       "processing.time_budget_ms", registry=registry)
        self.dead_letters = Counter("oob_processing_dead_letters_total",
                                    "Stream entries moved to the dead-letter stream",
                                    registry=registry)
        self.reclaimed = Counter("oob_processing_entries_reclaimed_total",
                                 "Stream entries taken over from a dead or stuck worker",
                                 registry=registry)
        self.errors = Counter("oob_processing_errors_total",
                              "Processing errors, by kind (analyze: a record raised; engine: "
                              "the engine hit an internal error and returned partial results; "
                              "redis: a Redis command failed)", ["kind"],
                              registry=registry)
        for cls in (*HIT_CLASSES, "other"):
            self.hits.labels(cls)
        for kind in PROCESSING_ERRORS:
            self.errors.labels(kind)


class ProcessingQueueMetrics:
    """What the processing supervisor measures itself: the group's backlog and its workers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge("oob_processing_queue_lag_entries",
                         "Entries of the requests stream not yet delivered to the group",
                         registry=registry)
        self.pending = Gauge("oob_processing_queue_pending_entries",
                             "Entries delivered to a worker and not yet acked", registry=registry)
        self.workers = Gauge("oob_processing_workers", "Worker processes alive and ready",
                             registry=registry)
        self.restarts = Counter("oob_processing_worker_restarts_total",
                                "Worker processes restarted after dying", registry=registry)
        self.stuck_killed = Counter("oob_processing_stuck_workers_killed_total",
                                    "Workers killed for spending more than "
                                    "processing.record_timeout_s on one record",
                                    registry=registry)
        self.redis_up = Gauge("oob_processing_redis_up",
                              "1 when the supervisor's last Redis command succeeded",
                              registry=registry)


SINKS = ("webhook", "jsonl")


def class_label(cls: str) -> str:
    """A hit's class as a label value: unknown classes (custom packs) become "other"."""
    return cls if cls in HIT_CLASSES else "other"


class AggregationMetrics:
    """The aggregation service: hits into attacks, its backlog on the hits stream, the sinks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter("oob_aggregation_hits_total",
                            "Hits counted into attacks (after idempotency and duplicates), "
                            "by class", ["class"], registry=registry)
        self.attacks = Counter("oob_attacks_total", "Attacks opened, by class", ["class"],
                               registry=registry)
        self.duplicates = Counter("oob_aggregation_duplicate_hits_total",
                                  "Hits of a request already counted from another source "
                                  "(mirror copy + Lua record)", registry=registry)
        self.redelivered = Counter("oob_aggregation_redelivered_hits_total",
                                   "Hits skipped because their id was already counted",
                                   registry=registry)
        self.lag = Gauge("oob_aggregation_lag_entries",
                         "Entries of the hits stream not yet delivered to the aggregation group",
                         registry=registry)
        self.pending = Gauge("oob_aggregation_pending_entries",
                             "Entries of the hits stream delivered and not yet acked",
                             registry=registry)
        self.delay = Gauge("oob_aggregation_delay_seconds",
                           "Age of the newest hit of the last stored batch (now - hit ts)",
                           registry=registry)
        self.errors = Counter("oob_aggregation_errors_total",
                              "Batches that failed to store, by kind (redis, data)", ["kind"],
                              registry=registry)
        self.sink_deliveries = Counter("oob_sink_deliveries_total",
                                       "Attack events delivered, by sink", ["sink"],
                                       registry=registry)
        self.sink_failures = Counter("oob_sink_failures_total",
                                     "Failed delivery attempts, by sink", ["sink"],
                                     registry=registry)
        self.sink_dropped = Counter("oob_sink_dropped_total",
                                    "Attack events dropped (queue full or retries exhausted), "
                                    "by sink", ["sink"], registry=registry)
        for cls in (*HIT_CLASSES, "other"):
            self.hits.labels(cls)
            self.attacks.labels(cls)
        for kind in ("redis", "data"):
            self.errors.labels(kind)
        for sink in SINKS:
            self.sink_deliveries.labels(sink)
            self.sink_failures.labels(sink)
            self.sink_dropped.labels(sink)
