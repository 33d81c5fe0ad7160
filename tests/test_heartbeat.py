"""Keepalive pings: a peer that never answers is closed with 1011 in time, and leaves its
manager; a peer that answers stays connected and gets a measured latency."""

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
from core_support import (
    IO_TIMEOUT,
    OPCODE_CLOSE,
    OPCODE_PING,
    Frame,
    RawWebSocket,
    http_get,
    outcome,
    recv,
)
from websockets.asyncio.client import connect

PING_INTERVAL = 0.2
PING_TIMEOUT = 0.3
# Scheduling allowance on a loaded two-core machine, for "within interval + timeout".
SLACK = 0.3


def heartbeat_flags(interval: float = PING_INTERVAL, timeout: float = PING_TIMEOUT) -> list[str]:
    return ["--ws-ping-interval", str(interval), "--ws-ping-timeout", str(timeout)]


async def wait_for_ping(raw: RawWebSocket) -> float:
    """Read frames until a ping; when it came."""
    while (await raw.read_frame()).opcode != OPCODE_PING:
        pass
    return time.monotonic()


@pytest.fixture(scope="module")
def server(start_server_module):
    """A server that has already sent a ping: the first ping of a process is the subject
    of its own test (``test_first_ping_of_a_fresh_server_times_out_too``)."""
    started = start_server_module("apps.manager_apps:app", *heartbeat_flags(), "--no-access-log")

    async def first_ping() -> None:
        raw = await RawWebSocket.open(started.port, "/sub/heartbeat-warm-up")
        await wait_for_ping(raw)
        await raw.aclose()

    asyncio.run(asyncio.wait_for(first_ping(), IO_TIMEOUT))
    return started


async def members_after_wait(server, group: str, count: int) -> int:
    seen = (await http_get(server.port, f"/wait/{group}?members={count}")).json()
    return seen["len"]


@dataclass
class Silent:
    """What a peer that reads everything and answers no ping saw until the end."""

    member_id: int
    opened: float
    pings: list[float]
    ended: float
    close_frame: Frame | None


async def silent_peer(port: int, path: str) -> Silent:
    raw = await RawWebSocket.open(port, path)
    opened = time.monotonic()
    joined = (await raw.read_frame()).payload.decode()
    pings = []
    close_frame = None
    try:
        while True:
            frame = await raw.read_frame()
            if frame.opcode == OPCODE_PING:
                pings.append(time.monotonic())
            elif frame.opcode == OPCODE_CLOSE:
                close_frame = frame
                break
    except asyncio.IncompleteReadError:
        pass  # the server dropped the connection
    ended = time.monotonic()
    await raw.aclose()
    return Silent(int(joined.split()[1]), opened, pings, ended, close_frame)


async def test_peer_that_never_answers_pings_is_dropped_within_interval_plus_timeout(server):
    group = "heartbeat-silent"
    silent = await silent_peer(server.port, f"/sub/{group}")
    assert silent.pings, "the server ended the connection without pinging first"
    assert silent.ended - silent.pings[0] >= PING_TIMEOUT - 0.05, "ended before the timeout"
    assert silent.ended - silent.opened <= PING_INTERVAL + PING_TIMEOUT + SLACK, (
        f"ended {silent.ended - silent.opened:.3f} s after the handshake; pings at "
        f"{[round(ping - silent.opened, 3) for ping in silent.pings]}"
    )

    seen = await outcome(server.port, f"{group}:{silent.member_id}")
    assert seen["exception"] == "WebSocketDisconnect"
    assert seen["code"] == 1011
    assert seen["reason"] == "keepalive ping timeout"
    assert await members_after_wait(server, group, 0) == 0


async def test_peer_that_never_answers_pings_gets_a_1011_close_frame(server):
    """The peer still reads: it is told why, as RFC 6455 asks, before the TCP close."""
    silent = await silent_peer(server.port, "/sub/heartbeat-told")
    assert silent.close_frame is not None, (
        f"the connection ended {silent.ended - silent.opened:.3f} s after the handshake "
        "without a close frame"
    )
    assert silent.close_frame.close_code == 1011
    assert silent.close_frame.payload[2:].decode() == "keepalive ping timeout"


async def test_first_ping_of_a_fresh_server_times_out_too(start_server):
    """The very first ping a server process sends is timed out like any other."""
    interval, timeout = 1.0, PING_TIMEOUT
    fresh = start_server("apps.manager_apps:app", *heartbeat_flags(interval, timeout))
    silent = await silent_peer(fresh.port, "/sub/heartbeat-first")
    assert silent.pings
    assert silent.ended - silent.pings[0] <= timeout + 0.5, (
        f"ended {silent.ended - silent.pings[0]:.3f} s after the first ping, "
        f"{len(silent.pings)} ping(s) sent"
    )


async def test_peer_that_answers_pings_stays_connected_and_gets_a_latency(server):
    group = "heartbeat-answering"
    async with connect(
        server.ws_url(f"/sub/{group}"), open_timeout=IO_TIMEOUT, ping_interval=None
    ) as client:
        assert (await recv(client)).startswith("joined ")
        # Several ping intervals, more than twice interval + timeout: the connection must
        # not close meanwhile (the client library answers each ping with a pong).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.wait_closed(), 6 * PING_INTERVAL)

        await client.send("latency")
        latency = json.loads(await recv(client))["latency"]
        assert isinstance(latency, float)
        assert 0 < latency < PING_TIMEOUT
        assert await members_after_wait(server, group, 1) == 1
    assert await members_after_wait(server, group, 0) == 0
