"""``oob-node queue depth|peek``: real Redis, real CLI entry point, attacker text escaped."""

from __future__ import annotations

import argparse

import msgpack
import pytest
import redis as sync_redis

from node.cli import main as cli_main
from node.queue.embedded import EmbeddedRedis
from node.queue.inspect import main
from node.queue.keys import ENTRY_FIELD, PROCESSING_GROUP, Keys


def record(i: int, **extra) -> dict:
    r = {"v": 1, "id": f"01TESTRECORD{i:014d}", "ts": 1700000000.0 + i, "source": "mirror",
         "client_ip": "203.0.113.7", "ip_chain": ["203.0.113.7", "127.0.0.1"],
         "method": "GET", "scheme": "http", "host": "shop.example", "port": 0,
         "path": f"/p/{i}", "query": "", "http_version": "1.1", "headers": [["Host", "h"]],
         "body": b"", "body_size": 0, "body_truncated": False}
    r.update(extra)
    return r


@pytest.fixture
def filled(config):
    keys = Keys(config.redis.prefix)
    client = sync_redis.Redis.from_url(config.redis.url)
    for start in (0, 3):
        batch = [record(i) for i in range(start, start + 3)]
        client.xadd(keys.requests, {ENTRY_FIELD: msgpack.packb(batch, use_bin_type=True)})
    client.hset(keys.counters, mapping={"records": 6})
    client.hset(keys.records_by_source, mapping={"mirror": 6})
    client.xgroup_create(keys.requests, PROCESSING_GROUP, id="0")
    client.xreadgroup(PROCESSING_GROUP, "w1", {keys.requests: ">"}, count=1)
    yield client, keys
    client.delete(keys.requests, keys.counters, keys.records_by_source)
    client.close()


def test_depth(config, filled, capsys):
    assert main(config, argparse.Namespace(action="depth", count=5)) == 0
    out = capsys.readouterr().out
    assert f"{config.redis.prefix}:requests: 2 entries; group processing: lag 1, pending 1" in out
    assert "counters: records=6" in out and "records by source: mirror=6" in out


@pytest.mark.parametrize("count,paths", [(1, ["/p/5"]), (4, ["/p/2", "/p/3", "/p/4", "/p/5"]),
                                         (50, [f"/p/{i}" for i in range(6)])])
def test_peek_last_records_oldest_first(config, filled, capsys, count, paths):
    assert main(config, argparse.Namespace(action="peek", count=count)) == 0
    out = capsys.readouterr().out
    shown = [line.split()[1].split("://", 1)[1].removeprefix("shop.example")
             for line in out.splitlines() if line.startswith("  GET ")]
    assert shown == paths


def test_peek_escapes_attacker_text(config, filled, capsys):
    client, keys = filled
    hostile = record(9, path="/\x1b]0;pwned\x07\n2026 fake log line", method=b"G\xffT",
                     headers=[["X-Evil", "\x1b[2J"]], body=b"\x1b[31m")
    client.xadd(keys.requests, {ENTRY_FIELD: msgpack.packb([hostile], use_bin_type=True)})
    assert main(config, argparse.Namespace(action="peek", count=1)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
    assert "fake log line" in out and "\n2026 fake" not in out


def test_embedded_socket_of_a_running_node(make_config, tmp_path, capsys):
    """No redis.url: the CLI finds the embedded server of `oob-node run` in the data dir."""
    data = tmp_path / "node-data"
    with EmbeddedRedis(data / "redis"):
        rc = cli_main(["--data-dir", str(data), "queue", "depth"])
    assert rc == 0 and "oob:requests: 0 entries" in capsys.readouterr().out
    assert cli_main(["--data-dir", str(tmp_path / "nothing"), "queue", "peek"]) == 1
    assert "no running node" in capsys.readouterr().err
