"""Streaming export: a large set (20k hits) comes out complete, chunked, read from Redis page
by page; CSV cells that a spreadsheet would evaluate are neutralized."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from agg_helpers import T0, make_hit

from node.aggregation.export import EXPORT_PAGE, csv_cell

N_HITS = 20_000


async def seed_many(client, n: int) -> None:
    batch = 2000
    for start in range(0, n, batch):
        await client.deps.store.apply(
            [make_hit(f"x{i}", ts=T0 + i, ip=f"10.{i // 65000}.{i // 250 % 250}.{i % 250 + 1}")
             for i in range(start, min(n, start + batch))])


async def test_export_streams_a_large_set_in_pages(client, auth):
    await seed_many(client, N_HITS)
    reads_before = client.deps.store.page_reads
    resp = await client.get("/api/v1/export?format=jsonl", headers=auth)
    assert resp.status == 200
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in resp.headers
    chunks, lines = 0, []
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks += 1
        lines.append(chunk)
    rows = [orjson.loads(line) for line in b"".join(lines).splitlines()]
    assert len(rows) == N_HITS and len({r["id"] for r in rows}) == N_HITS
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)  # oldest first
    # The handler read the documents a page at a time, never the whole set at once.
    assert client.deps.store.page_reads - reads_before >= N_HITS // EXPORT_PAGE
    assert chunks > 1


async def test_export_since_until_and_csv(client, auth):
    await seed_many(client, 50)
    resp = await client.get(f"/api/v1/export?format=csv&since={T0 + 10}&until={T0 + 19}",
                            headers=auth)
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [float(r["ts"]) for r in rows] == [T0 + i for i in range(10, 20)]
    assert rows[0]["point"] == "query.id" and rows[0]["class"] == "sqli"


async def test_export_attacks(client, auth):
    await seed_many(client, 30)
    body = await (await client.get("/api/v1/export?kind=attacks", headers=auth)).read()
    rows = [orjson.loads(line) for line in body.splitlines()]
    assert len(rows) == 30 and all("sample_hits" not in r and "_paths" not in r for r in rows)


FORMULAS = ["=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
            "\t=1", "\r=1"]


@pytest.mark.parametrize("payload", FORMULAS)
def test_csv_cells_never_start_a_formula(payload):
    assert csv_cell(payload) == "'" + payload
    assert csv_cell("plain ' OR 1=1--") == "plain ' OR 1=1--"
    assert csv_cell(-1) == "-1"  # numbers stay numbers


async def test_formula_in_a_fragment_is_escaped_in_the_file(client, auth):
    await client.deps.store.apply([make_hit("f1", fragment="=cmd|'/C calc'!A0",
                                            path="@evil")])
    resp = await client.get("/api/v1/export?format=csv", headers=auth)
    (row,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert row["fragment"] == "'=cmd|'/C calc'!A0" and row["path"] == "'@evil"
