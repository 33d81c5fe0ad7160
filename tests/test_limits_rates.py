"""Per-connection rate limits, the bound on owed pongs and the idle timeout, against a real
server: a client over a limit is closed with 1008 and a reason naming the limit, before its
handler sees the frame that tripped it, while other clients of the same server go on; a
route may set its own limit; a ping flood from a client that never reads leaves the
server's memory flat; a client that sends no data for ``ws_idle_timeout`` is closed with
1001."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from core_support import (
    IO_TIMEOUT,
    OPCODE_CLOSE,
    OPCODE_PING,
    RawWebSocket,
    http_get,
    recv,
)
from process_support import rss_kib
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ferrosock import App
from ferrosock.config import Config
from ferrosock.process import check_settings

OPCODE_PONG = 0xA
MESSAGES_PER_SECOND = 40
BYTES_PER_SECOND = 20_000
IDLE_TIMEOUT = 0.6
# Scheduling allowance on a loaded machine.
SLACK = 1.0


async def closed_by_server(websocket) -> tuple[int, str]:
    """Receive until the server closes; its close code and reason."""

    async def drain() -> tuple[int, str]:
        try:
            while True:
                await websocket.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server sent no close frame"
            return closed.rcvd.code, closed.rcvd.reason

    return await asyncio.wait_for(drain(), IO_TIMEOUT)


@pytest.fixture(scope="module")
def limited_server(start_server_module):
    return start_server_module(
        "apps.limits:app",
        "--ws-max-messages-per-second",
        str(MESSAGES_PER_SECOND),
        "--ws-max-bytes-per-second",
        str(BYTES_PER_SECOND),
        "--no-access-log",
    )


async def test_too_many_messages_close_with_1008_while_a_neighbour_goes_on(limited_server):
    url = limited_server.ws_url("/echo")
    async with connect(url) as neighbour, connect(url) as flooder:
        await neighbour.send("before")
        assert await recv(neighbour) == "before"
        for index in range(MESSAGES_PER_SECOND * 5):
            try:
                await flooder.send(f"m{index}")
            except ConnectionClosed:
                break
        code, reason = await closed_by_server(flooder)
        assert (code, reason) == (1008, "message rate limit exceeded")
        await neighbour.send("after")
        assert await recv(neighbour) == "after"
    limited_server.wait_for_stderr(lambda line: "with 1008: message rate limit" in line, IO_TIMEOUT)


async def test_echoes_received_stop_at_the_limit(limited_server):
    """Nothing past the tripping frame reaches the handler: the echoes stop at the bucket's
    size (one second's worth plus what refilled while sending)."""
    async with connect(limited_server.ws_url("/echo")) as flooder:
        started = time.monotonic()
        sent = 0
        for index in range(MESSAGES_PER_SECOND * 5):
            try:
                await flooder.send(str(index))
            except ConnectionClosed:
                break
            sent += 1
        elapsed = time.monotonic() - started
        echoed: list[str] = []
        try:
            while True:
                echoed.append(await asyncio.wait_for(flooder.recv(), IO_TIMEOUT))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008
    allowed = MESSAGES_PER_SECOND * (1 + elapsed)
    assert MESSAGES_PER_SECOND <= len(echoed) <= allowed, (len(echoed), sent, elapsed)
    assert echoed == [str(index) for index in range(len(echoed))]


async def test_too_many_bytes_close_with_1008_naming_bytes(limited_server):
    url = limited_server.ws_url("/echo")
    async with connect(url) as neighbour, connect(url) as flooder:
        chunk = b"x" * (BYTES_PER_SECOND // 4)
        for _ in range(12):
            try:
                await flooder.send(chunk)
            except ConnectionClosed:
                break
        code, reason = await closed_by_server(flooder)
        assert (code, reason) == (1008, "byte rate limit exceeded")
        await neighbour.send(b"y" * 1000)
        assert await recv(neighbour) == b"y" * 1000


async def test_a_client_within_the_limits_is_never_closed(limited_server):
    async with connect(limited_server.ws_url("/echo")) as client:
        # Half the message rate for two seconds: never over.
        for index in range(MESSAGES_PER_SECOND):
            await client.send(f"steady {index}")
            assert await recv(client) == f"steady {index}"
            await asyncio.sleep(2 / MESSAGES_PER_SECOND)


async def test_a_route_sets_its_own_message_rate(limited_server):
    from apps.limits import LIMITED_ROUTE_MESSAGES_PER_SECOND as route_rate

    burst = route_rate * 3
    assert burst < MESSAGES_PER_SECOND
    async with connect(limited_server.ws_url("/echo")) as server_limit:
        for index in range(burst):
            await server_limit.send(str(index))
        for index in range(burst):
            assert await recv(server_limit) == str(index)
    async with connect(limited_server.ws_url("/limited")) as route_limit:
        for index in range(burst):
            try:
                await route_limit.send(str(index))
            except ConnectionClosed:
                break
        assert await closed_by_server(route_limit) == (1008, "message rate limit exceeded")


async def test_control_frames_count_against_the_message_rate(limited_server):
    raw = await RawWebSocket.open(limited_server.port, "/echo")
    try:
        frames = b"".join(
            struct.pack("!BB4s", 0x80 | OPCODE_PING, 0x80, b"\0\0\0\0")
            for _ in range(MESSAGES_PER_SECOND * 3)
        )
        raw.writer.write(frames)
        await raw.writer.drain()
        close = await raw.close_frame()
        assert close.close_code == 1008
        assert close.payload[2:] == b"message rate limit exceeded"
    finally:
        await raw.aclose()


PING_PAYLOAD = 125  # the longest a control frame may carry
ZERO_MASK = b"\0\0\0\0"  # masked frames whose payload reads as sent


def ping(counter: int) -> bytes:
    """A masked ping whose payload starts with ``counter``."""
    payload = struct.pack("!Q", counter).ljust(PING_PAYLOAD, b"p")
    return struct.pack("!BB4s", 0x80 | OPCODE_PING, 0x80 | PING_PAYLOAD, ZERO_MASK) + payload


def text(message: str) -> bytes:
    data = message.encode()
    assert len(data) < 126
    return struct.pack("!BB4s", 0x81, 0x80 | len(data), ZERO_MASK) + data


def flood_pings(port: int, count: int, marker: str) -> socket.socket:
    """Open a raw WebSocket to ``/sink``, send ``count`` pings and then the text
    ``marker``, without reading a byte of the answers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /sink HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    batch = 10_000
    for start in range(0, count, batch):
        sock.sendall(b"".join(ping(n) for n in range(start, min(start + batch, count))))
    sock.sendall(text(marker))
    return sock


def pongs_until(sock: socket.socket, expected: int) -> tuple[int, int]:
    """Read the answers to a flood until the pong of ping ``expected``: how many pongs
    came, and how many bytes after it."""
    buffer = b""
    head_end = -1
    while head_end < 0:
        buffer += sock.recv(65536)
        head_end = buffer.find(b"\r\n\r\n")
    assert buffer.startswith(b"HTTP/1.1 101"), buffer[:100]
    buffer = buffer[head_end + 4 :]
    pongs = 0
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline:
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1]
            if len(buffer) < 2 + length:
                break
            payload, buffer = buffer[2 : 2 + length], buffer[2 + length :]
            assert opcode == OPCODE_PONG, opcode
            pongs += 1
            if struct.unpack("!Q", payload[:8])[0] == expected:
                return pongs, len(buffer)
        buffer += sock.recv(65536)
    raise AssertionError(f"no pong for ping {expected} after {pongs} pongs")


@pytest.fixture
def unlimited_server(start_server):
    """No rate limits and no heartbeat: nothing closes a flooder."""
    return start_server("apps.limits:app", "--ws-ping-interval", "0", "--no-access-log")


async def flood_and_wait(server, count: int, marker: str) -> socket.socket:
    """Flood and wait until the server has taken every ping (its handler saw the marker)."""
    flooder = await asyncio.to_thread(flood_pings, server.port, count, marker)
    assert (await http_get(server.port, f"/seen/{marker}")).json() == {"seen": True}
    return flooder


async def test_a_ping_flood_that_never_reads_leaves_memory_flat(unlimited_server):
    # Warm up: the allocator's arenas, the IO threads' buffers, a first flooder.
    warm = await flood_and_wait(unlimited_server, 20_000, "warm")
    await asyncio.to_thread(pongs_until, warm, 19_999)
    warm.close()
    before = rss_kib(unlimited_server.pid)
    count = 200_000
    flooder = await flood_and_wait(unlimited_server, count, "flooded")
    try:
        grown = rss_kib(unlimited_server.pid) - before
        # Owing one pong per ping, the pongs the socket could not take piled up: ~30 MB.
        assert grown < 4096, f"RSS grew by {grown} KiB during {count} pings"
        # The newest ping is answered; older ones still unwritten were folded into it.
        pongs, left = await asyncio.to_thread(pongs_until, flooder, count - 1)
        assert left == 0
        assert pongs < count, pongs
        async with connect(unlimited_server.ws_url("/echo")) as client:
            await client.send("still serving")
            assert await recv(client) == "still serving"
    finally:
        flooder.close()


@pytest.fixture(scope="module")
def idle_server(start_server_module):
    return start_server_module(
        "apps.limits:app", "--ws-idle-timeout", str(IDLE_TIMEOUT), "--no-access-log"
    )


async def test_a_silent_client_is_closed_with_1001_after_the_idle_timeout(idle_server):
    started = time.monotonic()
    async with connect(idle_server.ws_url("/echo")) as client:
        assert await closed_by_server(client) == (1001, "idle timeout")
    elapsed = time.monotonic() - started
    assert IDLE_TIMEOUT <= elapsed < IDLE_TIMEOUT + SLACK, elapsed


async def test_data_holds_off_the_idle_timeout_and_pings_do_not(idle_server):
    async with connect(idle_server.ws_url("/echo")) as client:
        chatty_until = time.monotonic() + 3 * IDLE_TIMEOUT
        while time.monotonic() < chatty_until:
            last_sent = time.monotonic()
            await client.send("here")
            assert await recv(client) == "here"
            await asyncio.sleep(IDLE_TIMEOUT / 4)
        assert await closed_by_server(client) == (1001, "idle timeout")
        assert time.monotonic() - last_sent >= IDLE_TIMEOUT
    raw = await RawWebSocket.open(idle_server.port, "/echo")
    try:
        started = time.monotonic()

        async def keep_pinging() -> None:
            while True:
                await raw.send_frame(OPCODE_PING, b"alive?")
                await asyncio.sleep(IDLE_TIMEOUT / 5)

        pinger = asyncio.create_task(keep_pinging())
        try:
            close = await raw.close_frame()
        finally:
            pinger.cancel()
        assert close.opcode == OPCODE_CLOSE and close.close_code == 1001
        assert time.monotonic() - started < IDLE_TIMEOUT + SLACK
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "setting", ["ws_max_messages_per_second", "ws_max_bytes_per_second", "ws_idle_timeout"]
)
@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_bad_limit_values_fail_at_startup_naming_the_setting(setting, value):
    with pytest.raises(ValueError, match=setting):
        check_settings(Config(**{setting: value}))


def test_route_limits_survive_include_router():
    from ferrosock import APIRouter

    async def endpoint(websocket) -> None:
        await websocket.accept()

    router = APIRouter()
    router.websocket("/chat", max_messages_per_second=3)(endpoint)
    router.add_websocket_route("/raw", endpoint, max_bytes_per_second=1000)
    app = App()
    app.include_router(router, prefix="/v1")
    limits = {route.path: route.engine_limits for route in app.routes}
    assert limits["/v1/chat"] == {"max_messages_per_second": 3.0}
    assert limits["/v1/raw"] == {"max_bytes_per_second": 1000.0}


def test_a_route_limit_must_be_positive():
    app = App()
    with pytest.raises(ValueError, match="max_messages_per_second"):
        app.websocket("/ws", max_messages_per_second=0)(lambda: None)
    with pytest.raises(ValueError, match="max_bytes_per_second"):
        app.websocket_route("/ws", max_bytes_per_second=-5)(lambda: None)
