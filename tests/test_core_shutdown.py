"""SIGTERM with a thousand sockets open: every socket gets 1001, handlers get
``graceful_shutdown_timeout`` and are then cancelled, and the process exits within that
timeout plus a second, even when clients never answer the close, had stopped reading, or
run handlers that ignore being cancelled."""

from __future__ import annotations

import asyncio
import signal
import time

from core_support import IO_TIMEOUT, RawWebSocket, close_code_after_recv, recv
from test_core_slow_consumer import open_small_window
from websockets.asyncio.client import connect

GRACE = 3.0
ECHO_CLIENTS = 970  # websockets clients: they answer the close
SILENT_CLIENTS = 20  # read the close but never answer it
STALLED_CLIENTS = 5  # stopped reading (the server's writes to them blocked) until SIGTERM
LINGERING_CLIENTS = 4  # their handlers ignore the end and must be cancelled
STUBBORN_CLIENTS = 1  # its handler ignores being cancelled too: it is left behind
CONNECT_BATCH = 100


async def connect_many(url: str, count: int) -> list:
    clients = []
    for start in range(0, count, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, count - start)
        clients += await asyncio.gather(
            *(connect(url, open_timeout=30, ping_interval=None) for _ in range(batch))
        )
    return clients


async def test_sigterm_with_1000_clients_sends_1001_and_exits_in_time(start_server):
    server = start_server(
        "apps.core:app",
        "--graceful-shutdown-timeout",
        str(GRACE),
        "--ws-ping-interval",
        "0",
        "--no-access-log",
    )
    echo = await connect_many(server.ws_url("/echo"), ECHO_CLIENTS)
    lingering = await connect_many(server.ws_url("/linger"), LINGERING_CLIENTS)
    lingering += await connect_many(server.ws_url("/linger?stubborn=true"), STUBBORN_CLIENTS)
    silent = [await RawWebSocket.open(server.port, "/echo") for _ in range(SILENT_CLIENTS)]
    stalled = []
    for index in range(STALLED_CLIENTS):
        path = f"/send-many/shutdown-stalled-{index}?count=1000000&size=8192"
        raw = await open_small_window(server.port, path)
        raw.writer.transport.pause_reading()
        stalled.append(raw)
    for client in echo[:: ECHO_CLIENTS // 10]:
        await client.send("up")
        assert await recv(client) == "up"

    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    exit_status = asyncio.ensure_future(asyncio.to_thread(server.wait, GRACE + 1.0 + IO_TIMEOUT))
    for raw in stalled:
        raw.writer.transport.resume_reading()
    codes = await asyncio.gather(*(close_code_after_recv(c) for c in echo + lingering))
    raw_codes = [(await raw.close_frame()).close_code for raw in silent + stalled]
    assert await exit_status == 0
    exited_after = time.monotonic() - signalled

    assert codes == [1001] * (ECHO_CLIENTS + LINGERING_CLIENTS + STUBBORN_CLIENTS)
    assert raw_codes == [1001] * (SILENT_CLIENTS + STALLED_CLIENTS)
    # The lingering handlers held the process for the grace period, then were cancelled.
    assert GRACE <= exited_after <= GRACE + 1.0, exited_after
    output = server.output()
    assert "Cancelled 5 handler(s) still running at shutdown" in output
    assert "1 handler(s) ignored being cancelled" in output
    print(f"exited {exited_after:.2f} s after SIGTERM")
    for raw in silent + stalled:
        raw.vanish()
