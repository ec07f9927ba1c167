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
        """Hash holding one attack (see aggregation.store)."""
        return f"{self.prefix}:attack:{attack_id}"

    @property
    def attacks_index(self) -> str:
        """Sorted set attack id -> last_seen: the attack list, newest first."""
        return f"{self.prefix}:attacks"

    def attack_group(self, group_key: str) -> str:
        """String group key (class|ip|host|app) -> id of the open attack for that group."""
        return f"{self.prefix}:attack-group:{group_key}"

    @property
    def hits_index(self) -> str:
        """Sorted set hit id -> ts of stored hits, newest first."""
        return f"{self.prefix}:hits-index"

    def hit(self, hit_id: str) -> str:
        """String holding one stored (redacted) hit as JSON."""
        return f"{self.prefix}:hit:{hit_id}"

    @property
    def seen_hits(self) -> str:
        """Sorted set of hit ids already counted (idempotency), scored by ts for trimming."""
        return f"{self.prefix}:seen-hits"

    @property
    def seen_requests(self) -> str:
        """Sorted set of request fingerprints already counted (mirror + Lua duplicates)."""
        return f"{self.prefix}:seen-requests"
