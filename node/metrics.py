"""Every Prometheus metric of the node, one class per role, each bound to a registry passed in
(no global registry: tests get a fresh one each).

Conventions: ``oob_`` prefix, base units (seconds, bytes), ``_total`` counters, labels only
from closed sets (class, source, reason), never client IPs, hosts or paths.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
