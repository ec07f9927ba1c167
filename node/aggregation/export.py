"""``GET /api/v1/export?format=jsonl|csv&kind=hits|attacks&since=&until=``: streaming export
for SIEMs and spreadsheets, oldest first.

The response is chunked and written page by page while the index is scanned (``EXPORT_PAGE``
documents per Redis round trip and per write), so an export of millions of hits uses the
memory of one page. CSV cells that a spreadsheet would run as a formula (starting with
``= + - @``, tab or CR) get a leading ``'``: attacker text must not execute on an analyst's
machine.
"""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any

import orjson
from aiohttp import web

from node.aggregation import params as p
from node.aggregation.api import DEPS
from node.aggregation.grouping import point_text, public
from node.aggregation.query import Window, scan_docs

EXPORT_PAGE = 500
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
HIT_COLUMNS = ("ts", "id", "attack_id", "class", "rule_id", "severity", "score", "client_ip",
               "host", "application", "method", "path", "point", "fragment", "source",
               "response_status", "outcome", "duplicate", "request_id", "record_id")
ATTACK_COLUMNS = ("id", "class", "client_ip", "host", "application", "first_seen", "last_seen",
                  "hits", "outcome", "status", "rule_ids", "sources", "paths", "points")


def csv_cell(value: Any) -> str:
    """SECURITY: a text cell that a spreadsheet would evaluate is neutralized with ``'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        value = ";".join(_list_item(v) for v in value)
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _list_item(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2:  # [name, count] of top lists
        return f"{value[0]}={value[1]}"
    return str(value)


def csv_row(doc: dict[str, Any], columns: tuple[str, ...]) -> bytes:
    out = io.StringIO()
    row = dict(doc)
    if isinstance(row.get("point"), list):
        row["point"] = point_text(row["point"])
    csv.writer(out).writerow([csv_cell(row.get(c)) for c in columns])
    return out.getvalue().encode()


def jsonl_row(doc: dict[str, Any], columns: tuple[str, ...]) -> bytes:
    return orjson.dumps(doc, default=str) + b"\n"


async def export(request: web.Request) -> web.StreamResponse:
    deps, q = request.app[DEPS], request.query
    p.check_known(q, ("format", "kind", "since", "until"))
    fmt = p.choice(q, "format", ("jsonl", "csv"), "jsonl")
    kind = p.choice(q, "kind", ("hits", "attacks"), "hits")
    lo, hi = p.time_range(p.timestamp(q, "since"), p.timestamp(q, "until"))
    index, key_of, columns = ((deps.keys.hits_index, deps.keys.hit, HIT_COLUMNS)
                              if kind == "hits" else
                              (deps.keys.attacks_index, deps.keys.attack, ATTACK_COLUMNS))
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
        "Content-Disposition": f'attachment; filename="oob-{kind}.{fmt}"'})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    render = csv_row if fmt == "csv" else jsonl_row
    if fmt == "csv":
        await resp.write(",".join(columns).encode() + b"\r\n")
    await _stream(resp, deps.store, index, key_of, Window(lo=lo, hi=hi, desc=False),
                  lambda doc: render(doc if kind == "hits" else public(doc, samples=False),
                                     columns))
    await resp.write_eof()
    return resp


async def _stream(resp: web.StreamResponse, store: Any, index: str, key_of: Any,
                  window: Window, render: Any) -> None:
    page: list[bytes] = []
    async with contextlib.aclosing(scan_docs(store, index, key_of, window,
                                             chunk=EXPORT_PAGE)) as docs:
        async for _, doc in docs:
            if doc is None:  # trimmed between the index read and the fetch
                continue
            page.append(render(doc))
            if len(page) >= EXPORT_PAGE:
                await resp.write(b"".join(page))
                page = []
    if page:
        await resp.write(b"".join(page))
