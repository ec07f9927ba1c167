"""Every Redis key and consumer-group name the node uses, in one place.

All keys start with a configurable prefix (default ``oob``) so several nodes or tenants can
share one Redis. Stream entries carry several records each: the field ``ENTRY_FIELD`` holds a
msgpack array of records (or hits), which is what makes one round trip per ~100 records
possible (see README "Queue").
"""

from __future__ import annotations

from dataclasses import dataclass

# Consumer groups (public names: dashboards and operators refer to them).
PROCESSING_GROUP = "processing"
AGGREGATION_GROUP = "aggregation"

# Field of a stream entry whose value is a msgpack array of records or hits.
ENTRY_FIELD = b"batch"
# Fields of a dead-letter entry besides ENTRY_FIELD.
DEAD_ERROR_FIELD = b"error"
DEAD_SOURCE_ID_FIELD = b"entry_id"
DEAD_DELIVERIES_FIELD = b"deliveries"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "oob"

    @property
    def requests(self) -> str:
        """Stream of request records (receiver -> processing)."""
        return f"{self.prefix}:requests"

    @property
    def requests_dead(self) -> str:
        """Dead-letter stream: entries delivered more than max_deliveries times, with the error."""
        return f"{self.prefix}:requests:dead"

    @property
    def hits(self) -> str:
        """Stream of hits (processing -> aggregation)."""
        return f"{self.prefix}:hits"

    @property
    def hits_dead(self) -> str:
        """Dead-letter stream of the hits stream: entries aggregation could not store."""
        return f"{self.prefix}:hits:dead"

    @property
    def exclusions(self) -> str:
        """Hash exclusion id -> JSON exclusion, written by the API, read by workers."""
        return f"{self.prefix}:exclusions"

    @property
    def exclusions_version(self) -> str:
        """Counter bumped on every exclusion change so workers reload without polling the hash."""
        return f"{self.prefix}:exclusions:version"

    @property
    def counters(self) -> str:
        """Hash of node-wide totals (records, dropped, dead_letters, ...) for /api/v1/stats."""
        return f"{self.prefix}:counters"

    @property
    def records_by_source(self) -> str:
        """Hash source -> records accepted from that source."""
        return f"{self.prefix}:records_by_source"

    def attack(self, attack_id: str) -> str:
        """String holding one attack as JSON (see aggregation.store)."""
        return f"{self.prefix}:attack:{attack_id}"

    @property
    def attacks_index(self) -> str:
        """Sorted set attack id -> last_seen: the attack list, newest first."""
        return f"{self.prefix}:attacks"

    @property
    def attack_groups(self) -> str:
        """Hash group digest (class|ip|host|app) -> id of the group's open attack: one HSET
        per batch instead of one key per group (aggregation.store; trimmed with the attacks)."""
        return f"{self.prefix}:attack-groups"

    @property
    def hits_index(self) -> str:
        """Sorted set hit id -> ts of stored hits, newest first."""
        return f"{self.prefix}:hits-index"

    def hit(self, hit_id: str) -> str:
        """String holding one stored (redacted) hit as JSON."""
        return f"{self.prefix}:hit:{hit_id}"

    @property
    def seen_hits(self) -> str:
        """Sorted set of hit ids already counted (idempotency), scored by the time counted."""
        return f"{self.prefix}:seen-hits"

    def seen_requests_window(self, window: int) -> str:
        """Hash of pairing counts (request key|rule|point|source -> n) for one time window:
        the mirror copy and the Lua record of one request count once (aggregation.store).
        Expires after two windows."""
        return f"{self.prefix}:seen-requests:{window}"

    @property
    def hits_by_class(self) -> str:
        """Hash class -> hits counted by aggregation (after idempotency and duplicates)."""
        return f"{self.prefix}:hits-by-class"

    def timeline(self, minute: int) -> str:
        """Hash class -> hits whose ts falls in that minute (epoch // 60), for the console
        chart; expires with the retention."""
        return f"{self.prefix}:timeline:{minute}"
