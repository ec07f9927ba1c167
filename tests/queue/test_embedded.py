"""The embedded launcher: a real server on a unix socket with AOF, surviving stale state."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import redis

from node.queue.embedded import EmbeddedRedis, find_server_binary


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(server.socket_path))


def test_binary_is_found() -> None:
    assert os.access(find_server_binary(), os.X_OK)


def test_data_survives_restart_via_aof(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = _client(server)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.xadd("s", {"k": "v"})
        client.close()
    with EmbeddedRedis(tmp_path) as server:
        client = _client(server)
        assert client.xlen("s") == 1
        client.close()


def test_recovers_from_stale_socket_file(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "redis.sock"))  # a socket file nobody listens on
    stale.close()
    with EmbeddedRedis(tmp_path) as server:
        assert _client(server).ping()


def test_recovers_after_crash_and_orphaned_server(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path).start()
    client = _client(first)
    client.set("k", "v")
    client.close()
    # The node crashes without stopping its server: the server is orphaned but alive.
    orphan_pid = first.process.pid if first.process else 0
    first.process = None
    with EmbeddedRedis(tmp_path) as second:
        assert _client(second).get("k") == b"v"
        try:
            os.kill(orphan_pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive or _is_zombie(orphan_pid)


def test_recovers_after_sigkill(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path).start()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.process = None
    with EmbeddedRedis(tmp_path) as again:
        assert _client(again).ping()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False
