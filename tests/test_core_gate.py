"""How a new connection is taken in: an upgrade whose head arrives whole is answered by the
loop thread, every other opening (a head in pieces, an HTTP request first, a refusal) still
ends as a client expects, and running out of descriptors pauses accepting without losing
the server. Raw sockets, since a client library always sends its head in one write."""

from __future__ import annotations

import asyncio
import resource
import socket
import time

from core_support import (
    IO_TIMEOUT,
    OPCODE_TEXT,
    RawWebSocket,
    encode_frame,
    handshake_headers,
    read_http_head,
    recv,
)
from process_support import open_fds
from websockets.asyncio.client import connect


def _upgrade_head(path: str, port: int, **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in handshake_headers(path, port).items()]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)


async def _echoes(raw: RawWebSocket, text: str) -> None:
    await raw.send_frame(OPCODE_TEXT, text.encode())
    frame = await raw.read_frame()
    assert (frame.opcode, frame.payload) == (OPCODE_TEXT, text.encode())


async def test_an_upgrade_head_sent_in_pieces_is_still_upgraded(core_server):
    reader, writer = await _open(core_server.port)
    head = _upgrade_head("/echo", core_server.port)
    for piece in (head[:7], head[7:60], head[60:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    status, headers = await asyncio.wait_for(read_http_head(reader), IO_TIMEOUT)
    assert status == 101, headers
    raw = RawWebSocket(reader, writer)
    await _echoes(raw, "in pieces")
    await raw.aclose()


async def test_frames_sent_with_the_head_are_not_lost(core_server):
    reader, writer = await _open(core_server.port)
    head = _upgrade_head("/echo", core_server.port)
    writer.write(head + encode_frame(OPCODE_TEXT, b"early") + encode_frame(OPCODE_TEXT, b"bird"))
    await writer.drain()
    status, _ = await asyncio.wait_for(read_http_head(reader), IO_TIMEOUT)
    assert status == 101
    raw = RawWebSocket(reader, writer)
    assert (await raw.read_frame()).payload == b"early"
    assert (await raw.read_frame()).payload == b"bird"
    await raw.aclose()


async def test_an_upgrade_after_an_http_request_on_the_same_connection(core_server):
    port = core_server.port
    reader, writer = await _open(port)
    writer.write(f"GET /items/3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    status, headers = await asyncio.wait_for(read_http_head(reader), IO_TIMEOUT)
    assert status == 200
    await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), IO_TIMEOUT)
    writer.write(_upgrade_head("/echo", port))
    await writer.drain()
    status, _ = await asyncio.wait_for(read_http_head(reader), IO_TIMEOUT)
    assert status == 101
    raw = RawWebSocket(reader, writer)
    await _echoes(raw, "kept alive, then upgraded")
    await raw.aclose()


async def test_a_refused_upgrade_gets_a_complete_response_and_the_connection_closes(core_server):
    reader, writer = await _open(core_server.port)
    writer.write(_upgrade_head("/close-before-accept", core_server.port))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), IO_TIMEOUT)  # read to the server's FIN
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 403 Forbidden"
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert fields["content-length"] == str(len(body)) and body == b"Forbidden"
    assert fields["connection"] == "close" and fields["server"] == "ferrosock"
    assert "date" in fields


async def test_a_path_without_a_websocket_route_is_refused_403(core_server):
    reader, writer = await _open(core_server.port)
    writer.write(_upgrade_head("/no-such-route", core_server.port))
    await writer.drain()
    status, _ = await asyncio.wait_for(read_http_head(reader), IO_TIMEOUT)
    writer.close()
    assert status == 403


async def test_out_of_descriptors_pauses_accepting_and_serving_resumes(start_server):
    server = start_server("apps.core:app")
    async with connect(server.ws_url("/echo"), open_timeout=IO_TIMEOUT) as websocket:
        await websocket.send("before")
        assert await recv(websocket) == "before"
        # Room for a few more descriptors only: a crowd of connections exhausts them.
        room = open_fds(server.pid) + 8
        soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (room, hard))
        crowd = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        try:
            await server.stderr_line(lambda line: "accept failed" in line, IO_TIMEOUT)
            # The connection it already had still works.
            await websocket.send("during")
            assert await recv(websocket) == "during"
        finally:
            for sock in crowd:
                sock.close()
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            async with connect(server.ws_url("/echo"), open_timeout=2) as websocket:
                await websocket.send("after")
                assert await recv(websocket) == "after"
                break
        except (OSError, TimeoutError):
            assert time.monotonic() < deadline, "accepting never resumed"
            await asyncio.sleep(0.1)
