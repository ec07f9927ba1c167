"""The stream writer's pipeline as raw RESP: built in one buffer, sent through a redis-py
connection, every reply read back.

Where it sits: ``streams.StreamWriter`` flushes its buffer as one pipeline (an ``XADD`` per
entry plus the counter increments). redis-py's own pipeline packs each command in Python,
and asyncio's ``writelines`` (Python 3.11) joins the whole pipeline once more before sending;
with ~300 KB of records per flush those copies and that per-command work cost the receiver
~0.7 us of CPU per record (bench/ingest.py, batch path). Here the records are copied once,
into the payload, and the connection (TLS, auth, timeouts) is still redis-py's.
"""

from __future__ import annotations

import redis.asyncio as aioredis

CRLF = b"\r\n"


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """A whole command (small arguments)."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))


def command_head(*args: bytes, more: int = 1) -> bytes:
    """A command of ``args`` plus ``more`` arguments the caller appends as ``bulk_head(n)``,
    the ``n`` bytes, CRLF (so a large value is copied only into the payload)."""
    return b"*%d\r\n" % (len(args) + more) + b"".join(map(bulk, args))


def bulk_head(size: int) -> bytes:
    return b"$%d\r\n" % size


async def send_pipeline(redis: aioredis.Redis, payload: bytes, replies: int) -> None:
    """Send ``payload`` (``replies`` commands) and read every reply. Raises ResponseError for
    the first error reply, or the connection's error; the connection is then dropped (its
    other replies may be unread), never returned to the pool half-read."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        # One bytes object: asyncio's writelines joins a list again, a single item it does not.
        await conn.send_packed_command(payload, check_health=False)
        for _ in range(replies):
            await conn.read_response()
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
