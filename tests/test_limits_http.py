"""The HTTP side's limits on a real ``ferrosock run``: how long a request head may take
(``handshake_timeout``), how long a kept-alive connection may idle (``timeout_keep_alive``),
how big a head may be (``http_max_header_size``, ``http_max_headers``: 431), and how many
WebSockets one client address may hold open (``max_connections_per_ip``: 429). Raw sockets
stand in for clients that misbehave; every client connects from 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest
from core_server import startup_error
from core_support import IO_TIMEOUT, handshake_headers, recv
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

APP = "apps.core:app"
# Slack for a loaded machine on top of a deadline the server keeps.
LATE = 3.0


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails on a reset, so a
    response the client never got cannot pass for one it did)."""
    return await asyncio.wait_for(reader.read(), timeout)


def _head(path: str, port: int, headers: dict[str, str], keep_alive: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if not keep_alive and "Connection" not in headers:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(port: int, head: bytes) -> bytes:
    """Send one raw request head; the status line the server answered with."""
    reader, writer = await _open(port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await _until_closed(reader, IO_TIMEOUT)
    finally:
        writer.close()
    return answer.split(b"\r\n", 1)[0]


async def _echo(url: str, **options) -> float:
    """Connect, echo one message; the seconds it took."""
    started = time.monotonic()
    async with connect(url, open_timeout=IO_TIMEOUT, **options) as websocket:
        await websocket.send("ping")
        assert await recv(websocket) == "ping"
    return time.monotonic() - started


# -- handshake_timeout: the request head must arrive in time ------------------------------


class Trickler:
    """A slowloris client: the start of a WebSocket handshake, then one header line every
    ``every`` seconds, never the blank line that ends the head; notes when the server
    closes it."""

    def __init__(self, port: int, every: float) -> None:
        self.port, self.every = port, every
        self.connecting = self.opened = self.closed = 0.0

    async def run(self) -> None:
        # The server accepts between the two (the loop may resume this task late).
        self.connecting = time.monotonic()
        reader, writer = await _open(self.port)
        self.opened = time.monotonic()
        try:
            writer.write(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode())
            line = 0
            while True:
                try:
                    if await asyncio.wait_for(reader.read(1), self.every) == b"":
                        break
                except TimeoutError:
                    pass
                line += 1
                writer.write(f"X-Slow-{line}: still coming\r\n".encode())
        except ConnectionError:
            pass
        finally:
            self.closed = time.monotonic()
            writer.close()


async def test_a_slowloris_crowd_does_not_keep_a_client_out_and_is_closed_in_time(start_server):
    timeout = 2.0
    server = start_server(APP, "--handshake-timeout", str(timeout))
    crowd = [Trickler(server.port, every=0.2) for _ in range(500)]
    tasks = [asyncio.create_task(slow.run()) for slow in crowd]
    deadline = time.monotonic() + IO_TIMEOUT
    while not all(slow.opened for slow in crowd):
        assert time.monotonic() < deadline, "the crowd could not connect"
        await asyncio.sleep(0.01)
    # While all of them hold a connection open, a normal client gets in and echoes at once.
    took = await _echo(server.ws_url("/echo"))
    still_open = sum(1 for slow in crowd if not slow.closed)
    assert still_open == len(crowd), f"only {still_open} trickling connections were open"
    assert took < 1.0, f"the echo took {took:.2f} s beside the crowd"
    await asyncio.wait_for(asyncio.gather(*tasks), timeout + LATE + IO_TIMEOUT)
    soonest = min(slow.closed - slow.connecting for slow in crowd)
    assert soonest >= timeout - 0.05, f"one was closed after {soonest:.2f} s"
    latest = max(slow.closed - slow.opened for slow in crowd)
    assert latest < timeout + LATE, f"one was held {latest:.2f} s"


async def test_a_connection_that_sends_nothing_is_closed_after_handshake_timeout(start_server):
    server = start_server(APP, "--handshake-timeout", "1")
    silent = [await _open(server.port) for _ in range(50)]
    started = time.monotonic()
    sent = await asyncio.gather(*(_until_closed(reader, 1 + LATE) for reader, _ in silent))
    took = time.monotonic() - started
    assert sent == [b""] * len(silent)  # closed without a response
    assert 0.9 <= took < 1 + LATE, took
    for _, writer in silent:
        writer.close()


async def test_a_head_sent_in_pieces_within_the_timeout_is_served(start_server):
    server = start_server(APP, "--handshake-timeout", "2")
    reader, writer = await _open(server.port)
    head = _head("/items/7", server.port, {})
    for piece in (head[:10], head[10:30], head[30:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.3)
    answer = await _until_closed(reader, IO_TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"item_id":7}'), answer


# -- timeout_keep_alive: an idle kept-alive connection is closed ---------------------------


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    writer.write(_head("/items/1", port, {}, keep_alive=True))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    assert await asyncio.wait_for(reader.readexactly(length), IO_TIMEOUT) == b'{"item_id":1}'


async def test_an_idle_keep_alive_connection_is_closed_after_timeout_keep_alive(start_server):
    server = start_server(APP, "--timeout-keep-alive", "0.5", "--handshake-timeout", "20")
    reader, writer = await _open(server.port)
    await _request(reader, writer, server.port)
    await asyncio.sleep(0.2)  # idle for less than the timeout: the connection still serves
    await _request(reader, writer, server.port)
    idle_from = time.monotonic()
    assert await _until_closed(reader, 0.5 + LATE) == b""
    idle = time.monotonic() - idle_from
    writer.close()
    # Closed by timeout_keep_alive, not by the far longer handshake_timeout.
    assert 0.4 <= idle < 0.5 + LATE, idle


# -- http_max_header_size and http_max_headers: 431 ----------------------------------------


async def test_a_request_head_over_http_max_header_size_is_answered_431(start_server):
    server = start_server(APP, "--http-max-header-size", "4096")
    port = server.port
    assert await _answer(port, _head("/items/1", port, {"X-Pad": "a" * 3000})) == (
        b"HTTP/1.1 200 OK"
    )
    too_big = b"HTTP/1.1 431 Request Header Fields Too Large"
    assert await _answer(port, _head("/items/1", port, {"X-Pad": "a" * 5000})) == too_big
    # Far over the limit: the client is still sending when the server answers.
    assert await _answer(port, _head("/items/1", port, {"X-Pad": "a" * 400_000})) == too_big
    upgrade = handshake_headers("/echo", port, X_Pad="a" * 5000)
    assert await _answer(port, _head("/echo", port, upgrade)) == too_big


async def test_after_its_431_the_server_reads_on_until_the_client_stops(start_server):
    # Closing a socket with unread bytes resets the connection, and a reset can destroy a
    # response still on its way; so the server discards what the client still sends.
    server = start_server(APP, "--http-max-header-size", "4096")
    reader, writer = await _open(server.port)
    writer.write(f"GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {'a' * 5000}".encode())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    for _ in range(10):  # the rest of a head the server no longer wants
        writer.write(b"a" * 8192)
        await writer.drain()
        await asyncio.sleep(0.005)
    writer.write_eof()
    assert await _until_closed(reader, IO_TIMEOUT) == b""
    writer.close()


async def test_the_default_head_limit_is_16_kib(start_server):
    server = start_server(APP)
    port = server.port
    assert await _answer(port, _head("/items/1", port, {"X-Pad": "a" * 15_000})) == (
        b"HTTP/1.1 200 OK"
    )
    too_big = b"HTTP/1.1 431 Request Header Fields Too Large"
    assert await _answer(port, _head("/items/1", port, {"X-Pad": "a" * 17_000})) == too_big


def _headers(count: int) -> dict[str, str]:
    return {f"X-Header-{number}": "v" for number in range(count)}


async def test_more_headers_than_http_max_headers_is_answered_431(start_server):
    server = start_server(APP)
    port = server.port
    too_many = b"HTTP/1.1 431 Request Header Fields Too Large"
    # _head adds Host and Connection: 98 more make the 100 allowed.
    assert await _answer(port, _head("/items/1", port, _headers(98))) == b"HTTP/1.1 200 OK"
    assert await _answer(port, _head("/items/1", port, _headers(99))) == too_many
    few = start_server(APP, "--http-max-headers", "10")
    assert await _answer(few.port, _head("/items/1", few.port, _headers(8))) == (b"HTTP/1.1 200 OK")
    assert await _answer(few.port, _head("/items/1", few.port, _headers(9))) == too_many


# -- max_connections_per_ip: 429 -----------------------------------------------------------


async def _refused_status(url: str, **options) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=IO_TIMEOUT, **options):
            pass
    return refused.value.response.status_code


async def _admitted_again(url: str, **options) -> ClientConnection:
    """Connect, retrying while the server has not yet seen a closed connection end."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            return await connect(url, open_timeout=IO_TIMEOUT, **options)
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            assert time.monotonic() < deadline, "a freed connection did not let a new one in"
            await asyncio.sleep(0.02)


async def test_a_client_over_max_connections_per_ip_is_refused_429(start_server):
    server = start_server(APP, "--max-connections-per-ip", "2")
    url = server.ws_url("/echo")
    first = await connect(url, open_timeout=IO_TIMEOUT)
    second = await connect(url, open_timeout=IO_TIMEOUT)
    assert await _refused_status(url) == 429
    server.wait_for_stderr(lambda line: "429 (max_connections_per_ip reached)" in line, IO_TIMEOUT)
    # Plain HTTP is not counted.
    assert await _answer(server.port, _head("/items/1", server.port, {})) == b"HTTP/1.1 200 OK"
    await first.close()
    third = await _admitted_again(url)
    await third.send("still echoing")
    assert await recv(third) == "still echoing"
    assert await _refused_status(url) == 429
    for websocket in (second, third):
        await websocket.close()


def _from(address: str) -> dict[str, dict[str, str]]:
    return {"additional_headers": {"X-Forwarded-For": address}}


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(start_server):
    # The default forwarded_allow_ips trusts 127.0.0.1, the peer of every client here.
    server = start_server(APP, "--max-connections-per-ip", "2")
    url = server.ws_url("/echo")
    one = [await connect(url, open_timeout=IO_TIMEOUT, **_from("1.2.3.4")) for _ in range(2)]
    assert await _refused_status(url, **_from("1.2.3.4")) == 429
    # Another client through the same proxy has its own count.
    other = [await connect(url, open_timeout=IO_TIMEOUT, **_from("5.6.7.8")) for _ in range(2)]
    # A chain counts its client, not the proxies it passed (127.0.0.1 is trusted).
    assert await _refused_status(url, **_from("5.6.7.8, 127.0.0.1")) == 429
    await one[0].close()
    again = await _admitted_again(url, **_from("1.2.3.4"))
    for websocket in (one[1], again, *other):
        await websocket.close()


async def test_from_an_untrusted_peer_the_header_is_ignored(start_server):
    server = start_server(APP, "--max-connections-per-ip", "2", "--forwarded-allow-ips", "10.0.0.1")
    url = server.ws_url("/echo")
    held = [await connect(url, open_timeout=IO_TIMEOUT, **_from(f"1.2.3.{n}")) for n in (1, 2)]
    # Each names another client, but all come from 127.0.0.1, which is what counts.
    assert await _refused_status(url, **_from("1.2.3.3")) == 429
    for websocket in held:
        await websocket.close()
    unproxied = start_server(APP, "--max-connections-per-ip", "1", "--no-proxy-headers")
    url = unproxied.ws_url("/echo")
    async with connect(url, open_timeout=IO_TIMEOUT, **_from("1.2.3.1")):
        assert await _refused_status(url, **_from("1.2.3.2")) == 429


# -- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--handshake-timeout", "0", "handshake_timeout"),
        ("--timeout-keep-alive", "-1", "timeout_keep_alive"),
        ("--http-max-header-size", "100", "http_max_header_size"),
        ("--http-max-header-size", "1048576", "http_max_header_size"),
        ("--http-max-headers", "0", "http_max_headers"),
        ("--max-connections-per-ip", "0", "max_connections_per_ip"),
    ],
)
def test_a_bad_limit_fails_at_startup_naming_it(flag, value, named):
    line = startup_error(APP, flag, value)
    assert named in line and value in line, line
