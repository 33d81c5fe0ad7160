"""Soak: about two minutes of connection churn against one server with a short heartbeat,
then the server must be back at rest.

Clients connect, echo and close; echo and drop the TCP connection without a close frame;
reset the socket in the middle of a frame; go silent and never answer the server's pings;
or stay a few seconds, chatting while pings go by. Meanwhile the server's RSS is sampled
every second: the second half of the run must not sit higher than the first (a leak per
connection would). Afterwards its open file descriptors return to where they were before
the churn, and the engine's open connections and the app's running handlers to zero.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import struct
import time

from core_support import IO_TIMEOUT, RawWebSocket, encode_frame, http_get
from process_support import open_fds, rss_kib
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SOAK_SECONDS = 100.0
SHORT_WORKERS = 12
SAMPLE_EVERY = 1.0
PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0
CLOSE_TIMEOUT = 1.0
# RSS the second half may sit above the first: allocator noise, not growth per connection.
RSS_TOLERANCE_KIB = 1024
SETTLE_SECONDS = 20.0
SEED = 2026


async def server_state(port: int) -> dict:
    return (await http_get(port, "/state")).json()


async def echo_and_close(url: str, rng: random.Random) -> None:
    async with connect(url, ping_interval=None) as websocket:
        for index in range(rng.randrange(1, 6)):
            await websocket.send(f"hello {index}")
            assert await websocket.recv() == f"hello {index}"


async def echo_and_drop(url: str, rng: random.Random) -> None:
    websocket = await connect(url, ping_interval=None)
    await websocket.send(rng.randbytes(rng.randrange(1, 2000)))
    await websocket.recv()
    websocket.transport.abort()


def reset(raw: RawWebSocket) -> None:
    """Close with a TCP reset: no FIN, no close frame."""
    sock = raw.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.writer.transport.abort()


async def reset_mid_frame(port: int, rng: random.Random) -> None:
    raw = await RawWebSocket.open(port, "/echo")
    frame = encode_frame(0x2, rng.randbytes(rng.randrange(200, 20_000)))
    raw.writer.write(frame[: rng.randrange(1, len(frame))])
    await raw.writer.drain()
    reset(raw)


async def never_answer_pings(port: int) -> None:
    """Read the server's pings and answer none: the heartbeat must end the connection."""
    raw = await RawWebSocket.open(port, "/echo")
    try:
        async with asyncio.timeout(PING_INTERVAL + PING_TIMEOUT + CLOSE_TIMEOUT + IO_TIMEOUT):
            while await raw.reader.read(4096):
                pass
    finally:
        await raw.aclose()


async def chat_through_pings(url: str, rng: random.Random) -> None:
    async with connect(url, ping_interval=None) as websocket:
        stay_until = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < stay_until:
            await websocket.send("still here")
            assert await websocket.recv() == "still here"
            await asyncio.sleep(0.2)


# Short-lived clients, each worker picking one at random (weights), and the clients that
# live through pings, which take seconds each and have workers of their own.
SHORT_KINDS = {"echo_and_close": 5, "echo_and_drop": 4, "reset_mid_frame": 3}
LONG_KINDS = {"chat_through_pings": 1, "never_answer_pings": 1}
LONG_WORKERS = 4


async def churn(
    port: int, url: str, kinds: dict[str, int], seed: int, until: float, done: dict[str, int]
) -> None:
    rng = random.Random(seed)
    names, weights = list(kinds), list(kinds.values())
    while time.monotonic() < until:
        kind = rng.choices(names, weights)[0]
        try:
            async with asyncio.timeout(IO_TIMEOUT * 2):
                if kind == "echo_and_close":
                    await echo_and_close(url, rng)
                elif kind == "echo_and_drop":
                    await echo_and_drop(url, rng)
                elif kind == "reset_mid_frame":
                    await reset_mid_frame(port, rng)
                elif kind == "chat_through_pings":
                    await chat_through_pings(url, rng)
                else:
                    await never_answer_pings(port)
        except ConnectionClosed as closed:
            raise AssertionError(f"{kind}: the server closed a healthy client: {closed}") from None
        done[kind] = done.get(kind, 0) + 1


def workers(port: int, url: str, seed: int, until: float, done: dict[str, int]) -> list:
    short = [churn(port, url, SHORT_KINDS, seed + n, until, done) for n in range(SHORT_WORKERS)]
    long = [
        churn(port, url, LONG_KINDS, seed + SHORT_WORKERS + n, until, done)
        for n in range(LONG_WORKERS)
    ]
    return short + long


async def sample(pid: int, until: float, rss: list[int]) -> None:
    while time.monotonic() < until:
        rss.append(rss_kib(pid))
        await asyncio.sleep(SAMPLE_EVERY)


async def soak(server) -> None:
    port, url = server.port, server.ws_url("/echo")
    # Warm up every path once, so that lazily made state (threads, buffers) is counted in
    # the baseline rather than as growth.
    warm: dict[str, int] = {}
    await asyncio.gather(*workers(port, url, 0, time.monotonic() + 3, warm))
    await until_at_rest(port)
    fds_before = open_fds(server.pid)

    rss: list[int] = []
    done: dict[str, int] = {}
    until = time.monotonic() + SOAK_SECONDS
    await asyncio.gather(sample(server.pid, until, rss), *workers(port, url, SEED, until, done))
    state = await until_at_rest(port)

    half = len(rss) // 2
    first, second = rss[:half], rss[half:]
    print(
        f"soak: {sum(done.values())} connections {done}; RSS KiB first half median "
        f"{statistics.median(first)} max {max(first)}, second half median "
        f"{statistics.median(second)} max {max(second)}; fds {fds_before} -> "
        f"{open_fds(server.pid)}; close codes {state['metrics']['close_codes']}"
    )
    assert all(done.get(kind, 0) > 0 for kind in warm), done
    # Clean closes, lost connections and heartbeat timeouts only: no protocol error.
    assert set(state["metrics"]["close_codes"]) <= {"1000", "1006", "1011"}, state
    assert statistics.median(second) <= statistics.median(first) + RSS_TOLERANCE_KIB, rss
    assert max(second) <= max(first) + RSS_TOLERANCE_KIB, rss
    async with asyncio.timeout(SETTLE_SECONDS):
        while open_fds(server.pid) > fds_before:
            await asyncio.sleep(0.1)


async def until_at_rest(port: int) -> dict:
    """Wait until no connection is open and no handler runs; the last state seen."""
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            state = await server_state(port)
            if state["open_connections"] == 0 and state["running_handlers"] == 0:
                return state
            await asyncio.sleep(0.1)


def test_churn_with_pings_leaves_memory_descriptors_and_counters_at_rest(start_server):
    server = start_server(
        "apps.limits:app",
        "--ws-ping-interval",
        str(PING_INTERVAL),
        "--ws-ping-timeout",
        str(PING_TIMEOUT),
        "--close-timeout",
        str(CLOSE_TIMEOUT),
        "--no-access-log",
    )
    # Longer than the async tests' bound: this one runs on its own loop.
    asyncio.run(asyncio.wait_for(soak(server), SOAK_SECONDS + 3 * SETTLE_SECONDS + 30))
