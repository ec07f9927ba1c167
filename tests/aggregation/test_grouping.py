"""Grouping of hits into attacks, through the real store on a real Redis: a scripted sequence
(same IP/class inside the window, after it, another host, another class, redelivered hits,
mirror + Lua duplicates with and without x-request-id) gives exactly the expected attacks."""

from __future__ import annotations

import pytest
from agg_helpers import T0, make_hit

from node.aggregation.grouping import GroupingParams, Item, apply_items, bump, events, top
from node.aggregation.store import AttackStore
from node.queue.keys import Keys

WINDOW = 900.0
A, B = "203.0.113.7", "198.51.100.9"


def scripted() -> list[dict]:
    """The sequence, in arrival order. Comments give the expected attack of each hit."""
    return [
        make_hit("r1", ts=T0),                                     # 1: sqli A shop
        make_hit("r2", ts=T0 + 60),                                # 1 (within the window)
        make_hit("r1", ts=T0),                                     # redelivered: not counted
        make_hit("r2-lua", ts=T0 + 61, source="lua", status=500,   # Lua copy of r2: dup,
                 request_id="req-r2", response_evidence="sql_error"),  # adds lua + outcome
        make_hit("r3", ts=T0 + 100, host="other.example"),        # 2: other host
        make_hit("r4", ts=T0 + 120, cls="xss", rule_id="xss-tag",  # 3: other class
                 point=("query", "q"), fragment="<script>"),
        make_hit("r5", ts=T0 + 200, request_id=""),                # 1: no request id ...
        make_hit("r5-lua", ts=T0 + 201, request_id="", source="lua"),  # ... its Lua copy: dup
        make_hit("r6", ts=T0 + 300, request_id=""),                # 1: same request again
        make_hit("r7", ts=T0 + 300, request_id=""),                # 1: and again (counted)
        make_hit("r8", ts=T0 + 300 + WINDOW + 1),                  # 4: after the window
        make_hit("r9", ts=T0 + 50, ip=B),                          # 5: other client
    ]


EXPECTED = {  # (class, ip, host, first_seen) -> (hits, sources, outcome)
    ("sqli", A, "shop.example", T0): (5, ["mirror", "lua"], "probably_succeeded"),
    ("sqli", A, "other.example", T0 + 100): (1, ["mirror"], "unknown"),
    ("xss", A, "shop.example", T0 + 120): (1, ["mirror"], "unknown"),
    ("sqli", A, "shop.example", T0 + 300 + WINDOW + 1): (1, ["mirror"], "unknown"),
    ("sqli", B, "shop.example", T0 + 50): (1, ["mirror"], "unknown"),
}


async def all_attacks(store: AttackStore) -> dict:
    ids = [m.decode() for m in await store.redis.zrange(store.keys.attacks_index, 0, -1)]
    attacks = await store.get_json([store.keys.attack(i) for i in ids])
    return {(a["class"], a["client_ip"], a["host"], a["first_seen"]): a for a in attacks}


@pytest.mark.parametrize("batch_size", [1, 3, 100])
async def test_scripted_sequence_gives_expected_attacks(make_config, redis, batch_size):
    cfg = make_config(aggregation__attack_window_s=WINDOW)
    store = AttackStore(redis, Keys(cfg.redis.prefix), cfg.aggregation)
    hits = scripted()
    for start in range(0, len(hits), batch_size):
        await store.apply(hits[start:start + batch_size], now=T0 + 400)
    attacks = await all_attacks(store)
    assert set(attacks) == set(EXPECTED)
    for key, (count, sources, outcome) in EXPECTED.items():
        attack = attacks[key]
        assert (attack["hits"], attack["sources"], attack["outcome"]) == (count, sources, outcome)
        assert attack["status"] == "monitored"
    first = attacks[("sqli", A, "shop.example", T0)]
    assert first["last_seen"] == T0 + 300
    assert first["paths"] == [["/products", 5]]
    assert first["points"] == [["query.id", 5]]
    by_record = {s["record_id"]: s for s in first["sample_hits"]}
    assert set(by_record) == {"r1", "r2", "r5", "r6", "r7"}
    assert by_record["r2"]["sources"] == ["mirror", "lua"]
    assert by_record["r2"]["response_status"] == 500
    assert by_record["r2"]["outcome"] == "probably_succeeded"
    assert by_record["r5"]["sources"] == ["mirror", "lua"]
    counts = await redis.hgetall(store.keys.hits_by_class)
    assert {k.decode(): int(v) for k, v in counts.items()} == {"sqli": 8, "xss": 1}


async def test_redelivery_of_a_whole_batch_changes_nothing(make_config, redis):
    cfg = make_config()
    store = AttackStore(redis, Keys(cfg.redis.prefix), cfg.aggregation)
    await store.apply(scripted(), now=T0 + 400)
    before = await all_attacks(store)
    again = await store.apply(scripted(), now=T0 + 401)
    assert again.counted == [] and again.redelivered == len(scripted())
    assert await all_attacks(store) == before


@pytest.mark.parametrize("order", ["mirror_first", "lua_first", "interleaved"])
async def test_duplicates_pair_one_to_one(make_config, redis, order):
    """Three identical requests without x-request-id, each seen by mirror and Lua: 3 hits."""
    cfg = make_config()
    store = AttackStore(redis, Keys(cfg.redis.prefix), cfg.aggregation)
    mirror = [make_hit(f"m{i}", ts=T0 + i, request_id="") for i in range(3)]
    lua = [make_hit(f"l{i}", ts=T0 + i, request_id="", source="lua", status=403)
           for i in range(3)]
    sequence = {"mirror_first": mirror + lua, "lua_first": lua + mirror,
                "interleaved": [h for pair in zip(mirror, lua, strict=True) for h in pair]}
    for hit in sequence[order]:
        await store.apply([hit], now=T0 + 10)
    (attack,) = (await all_attacks(store)).values()
    assert attack["hits"] == 3
    assert sorted(attack["sources"]) == ["lua", "mirror"]
    assert attack["outcome"] == "failed"


@pytest.mark.parametrize("request_id", ["req-1", ""])
async def test_duplicates_in_one_batch_count_once_whatever_their_timestamps(
        make_config, redis, request_id):
    """The mirror copy arrives first but the Lua record carries the earlier timestamp (it
    stamps the request's start): both in one batch, each hit still counts once (it was
    counted twice when pairing followed arrival order and counting followed timestamps)."""
    cfg = make_config()
    store = AttackStore(redis, Keys(cfg.redis.prefix), cfg.aggregation)
    rules = [("sqli-a", ("query", "id")), ("sqli-b", ("query", "id"))]
    mirror = [make_hit(f"m-{r}", ts=T0 + 0.002, request_id=request_id, rule_id=r, point=p)
              for r, p in rules]
    lua = [make_hit(f"l-{r}", ts=T0, request_id=request_id, rule_id=r, point=p,
                    source="lua") for r, p in rules]
    await store.apply(mirror + lua, now=T0 + 10)
    (attack,) = (await all_attacks(store)).values()
    assert attack["hits"] == len(rules)
    assert sorted(attack["sources"]) == ["lua", "mirror"]


SPACE_SAVING_CASES = [
    # (stream of keys, cap, expected top-2)
    (["a", "a", "b"], 4, [["a", 2], ["b", 1]]),
    (["a", "b", "c", "a", "d", "a"], 3, [["a", 3], ["d", 2]]),
    (["x"] * 5 + ["y"] * 3 + ["z"], 2, [["x", 5], ["z", 4]]),
]


@pytest.mark.parametrize("stream,cap,expected", SPACE_SAVING_CASES)
def test_top_counts(stream, cap, expected):
    counts: dict[str, int] = {}
    for key in stream:
        bump(counts, key, cap)
    assert len(counts) <= cap
    assert top(counts, 2) == expected


def test_update_events_every_n_hits():
    params = GroupingParams(window_s=WINDOW, top_n=5, sample_hits=3)
    current: dict = {}
    kinds = []
    for i in range(12):
        hit = make_hit(f"e{i}", ts=T0 + i)
        result = apply_items(current, [Item("g", f"p{i}", hit)], params)
        kinds += [kind for kind, _ in events(result, every=5)]
    assert kinds == ["attack.new", "attack.update", "attack.update"]
    assert len(current["g"]["sample_hits"]) == 3
