"""``websocket.send_*`` to a socket over ``outbox_limit``: the send waits while the socket
makes progress, however long that takes, and fails with 1013 once it has taken no byte
for ``slow_consumer_timeout``."""

from __future__ import annotations

import asyncio
import socket

from core_support import IO_TIMEOUT, OPCODE_TEXT, RawWebSocket, handshake_headers, outcome

SLOW_TIMEOUT = 1.0
# Time past SLOW_TIMEOUT for the outbox to fill and the close to be recorded.
CLOSE_SLACK = 4.0
OUTBOX_LIMIT = 64 * 1024
MESSAGE_SIZE = 8 * 1024


def server_args(*extra: str) -> tuple[str, ...]:
    return (
        "apps.core:app",
        "--slow-consumer-timeout",
        str(SLOW_TIMEOUT),
        "--outbox-limit",
        str(OUTBOX_LIMIT),
        "--ws-ping-interval",
        "0",
        "--no-access-log",
        *extra,
    )


async def open_small_window(port: int, path: str) -> RawWebSocket:
    """A client whose socket buffers little, so that the server's writes block soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), IO_TIMEOUT)
    reader, writer = await asyncio.open_connection(sock=sock)
    raw = RawWebSocket(reader, writer)
    status, _ = await raw.handshake(path, handshake_headers(path, port))
    assert status == 101
    return raw


async def test_send_to_a_reader_that_stopped_fails_with_1013_within_the_timeout(start_server):
    server = start_server(*server_args())
    loop = asyncio.get_running_loop()
    started = loop.time()
    raw = await open_small_window(server.port, "/send-many/stalled?count=1000000&size=8192")
    raw.writer.transport.pause_reading()
    seen = await outcome(server.port, "stalled")
    elapsed = loop.time() - started
    assert seen["exception"] == "WebSocketDisconnect", seen
    assert (seen["code"], seen["reason"]) == (1013, "slow consumer: no progress"), seen
    assert SLOW_TIMEOUT <= elapsed <= SLOW_TIMEOUT + CLOSE_SLACK, elapsed
    raw.vanish()


async def test_send_to_a_slow_reader_waits_for_it_past_the_timeout(start_server):
    """The reader takes 256 KiB every 0.2 s: slower than the handler sends, so its sends
    wait, for far longer than ``slow_consumer_timeout`` in all, but every pause is
    shorter than it; the reader gets every message and the handler's sends all return."""
    count = 1024  # 8 MiB: more than the socket buffers and the outbox hold
    server = start_server(*server_args())
    loop = asyncio.get_running_loop()
    raw = await open_small_window(server.port, f"/send-many/slow?count={count}&size=8192")
    started = loop.time()
    finished = asyncio.ensure_future(outcome(server.port, "slow"))
    for number in range(count):
        frame = await raw.read_frame()
        assert frame.opcode == OPCODE_TEXT and len(frame.payload) == MESSAGE_SIZE
        assert frame.payload[:8] == b"%08d" % number
        if number % 32 == 31:
            await asyncio.sleep(0.2)
    seen = await finished
    assert seen["exception"] is None, seen
    # The handler was held back by the reader for several timeouts in all.
    assert loop.time() - started >= 3 * SLOW_TIMEOUT
    await raw.aclose()
