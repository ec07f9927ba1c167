"""Did an attack attempt probably work? Aggregation's verdict from a hit's response.

Processing labels a hit with ``response_evidence`` when the record's response carries a
success marker (node/detectors/evidence.py: a passwd file, a SQL error, command output);
here each hit becomes a verdict: evidence -> ``probably_succeeded``; a 4xx answer (refused,
not found, blocked by something in front) -> ``failed``; no response or an inconclusive one
-> ``unknown``. A bare status 200 is never taken as success.
"""

from __future__ import annotations

from node.records import Hit

OUTCOMES = ("unknown", "failed", "probably_succeeded")

def hit_verdict(hit: Hit) -> str:
    """What one hit's response says: ``probably_succeeded``, ``failed`` (4xx),
    ``inconclusive`` (answered, no marker) or ``no_response`` (mirror copy: status 0)."""
    if hit.get("response_evidence"):
        return "probably_succeeded"
    status = int(hit.get("response_status") or 0)
    if not status:
        return "no_response"
    return "failed" if 400 <= status < 500 else "inconclusive"


def public_outcome(verdict: str) -> str:
    """The verdict as shown for a hit: one of OUTCOMES."""
    return verdict if verdict in ("probably_succeeded", "failed") else "unknown"


def attack_outcome(verdicts: dict[str, int]) -> str:
    """An attack's outcome from its hits' verdict counts: any success wins; ``failed`` only
    when every answered hit was refused; otherwise ``unknown``."""
    if verdicts.get("probably_succeeded"):
        return "probably_succeeded"
    if verdicts.get("failed") and not verdicts.get("inconclusive"):
        return "failed"
    return "unknown"
