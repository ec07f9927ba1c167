"""Redis killed under load: the mirror listener answers every request, counts what it could not
queue, and resumes by itself once Redis is back (a private server, killed and restarted on
the same data dir)."""

from __future__ import annotations

import asyncio

REQUEST = (b"GET /load?i=1 HTTP/1.1\r\nHost: shop.example-shadow\r\n"
           b"X-Forwarded-For: 203.0.113.7\r\nUser-Agent: load\r\n\r\n")
TOTAL = 3000
CONNECTIONS = 16


async def client(port: int, count: int, answered: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            answered[0] += 1
    finally:
        writer.close()


async def outage_controller(server, answered: list[int], events: list[str]) -> None:
    while answered[0] < TOTAL // 3:
        await asyncio.sleep(0.001)
    server.kill()
    events.append(f"killed at {answered[0]}")
    while answered[0] < 2 * TOTAL // 3:
        await asyncio.sleep(0.001)
    await asyncio.to_thread(server.start)
    events.append(f"restarted at {answered[0]}")


async def test_redis_killed_during_load(start_receiver, own_redis_server):
    rcv = await start_receiver(redis__url=own_redis_server.url, queue__max_buffered_records=300,
                               queue__depth_interval_ms=50)
    answered, events = [0], []
    controller = asyncio.create_task(outage_controller(own_redis_server, answered, events))
    per_conn = TOTAL // CONNECTIONS
    clients = [client(rcv.mirror_port, per_conn, answered) for _ in range(CONNECTIONS)]
    # Never hangs: bounded by a generous timeout; every request gets its answer.
    await asyncio.wait_for(asyncio.gather(*clients), 120)
    await asyncio.wait_for(controller, 30)
    assert answered[0] == per_conn * CONNECTIONS, events

    writer = rcv.ctx.writer
    for _ in range(1000):  # resumes by itself, no restart of the receiver
        if writer.redis_up and writer.buffered == 0:
            break
        await asyncio.sleep(0.01)
    assert writer.redis_up and writer.buffered == 0

    received = rcv.metric("oob_requests_received_total", source="mirror")
    enqueued = rcv.metric("oob_records_enqueued_total")
    shed = {r: rcv.metric("oob_requests_shed_total", reason=r)
            for r in ("redis_down", "buffer_full", "high_water")}
    print(f"outage: {events}; received {received:.0f}, enqueued {enqueued:.0f}, shed {shed}")
    assert received == answered[0]
    assert shed["redis_down"] > 0  # the outage outlasted the buffer: records were shed
    assert received == enqueued + sum(shed.values())  # nothing lost silently
    unique = {r["id"] for r in await rcv.records()}  # retries may duplicate entries
    assert len(unique) == enqueued

    # New requests are queued again.
    await asyncio.gather(*[client(rcv.mirror_port, 10, answered) for _ in range(4)])
    for _ in range(1000):
        after = {r["id"] for r in await rcv.records()}
        if len(after) >= len(unique) + 40:
            break
        await asyncio.sleep(0.01)
    assert len(after) == len(unique) + 40
