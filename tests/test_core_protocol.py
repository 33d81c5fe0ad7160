"""Malformed handshakes and frames are answered by the engine with the RFC 6455 codes."""

import asyncio

import pytest
from core_support import (
    IO_TIMEOUT,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    RawWebSocket,
    close_code_after_recv,
    encode_frame,
    handshake_headers,
    raw_handshake,
    read_http_head,
    recv,
)
from websockets.asyncio.client import connect

MAX_SIZE = 65536


@pytest.fixture(scope="module")
def small_max_size_server(start_server_module):
    return start_server_module("apps.core:app", "--ws-max-size", str(MAX_SIZE))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"Sec-WebSocket-Key": None}, id="missing-key"),
        pytest.param({"Sec-WebSocket-Version": "8"}, id="bad-version"),
        pytest.param({"Sec-WebSocket-Version": None}, id="missing-version"),
    ],
)
async def test_malformed_handshake_is_400(core_server, overrides):
    headers = handshake_headers("/echo", core_server.port, **overrides)
    response = await raw_handshake(core_server.port, "/echo", headers)
    assert response.status == 400


async def test_valid_raw_handshake_is_accepted_and_echoes(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        await raw.send_frame(OPCODE_TEXT, "raw héllo".encode())
        frame = await raw.read_frame()
        assert (frame.opcode, frame.payload) == (OPCODE_TEXT, "raw héllo".encode())
    finally:
        await raw.aclose()


async def test_invalid_utf8_in_text_frame_closes_with_1007(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        await raw.send_frame(OPCODE_TEXT, b"ok \xff\xfe not utf-8")
        assert (await raw.close_frame()).close_code == 1007
    finally:
        await raw.aclose()


async def test_unmasked_client_frame_closes_with_1002(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        await raw.send_frame(OPCODE_TEXT, b"unmasked", masked=False)
        assert (await raw.close_frame()).close_code == 1002
    finally:
        await raw.aclose()


OPCODE_CONTINUATION = 0x0
OPCODE_PONG = 0xA


async def test_fragmented_message_with_a_ping_in_between(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        raw.writer.write(encode_frame(OPCODE_TEXT, b"frag", fin=False))
        raw.writer.write(encode_frame(OPCODE_PING, b"are you there"))
        raw.writer.write(encode_frame(OPCODE_CONTINUATION, "mé".encode(), fin=False))
        raw.writer.write(encode_frame(OPCODE_CONTINUATION, b"nted"))
        await raw.writer.drain()
        pong = await raw.read_frame()
        assert (pong.opcode, pong.payload) == (OPCODE_PONG, b"are you there")
        echo = await raw.read_frame()
        assert (echo.opcode, echo.payload) == (OPCODE_TEXT, "fragménted".encode())
    finally:
        await raw.aclose()


async def test_frames_trickling_in_one_byte_at_a_time(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        wire = encode_frame(OPCODE_TEXT, b"a" * 300) + encode_frame(OPCODE_TEXT, b"b" * 5000)
        for index in range(len(wire)):
            raw.writer.write(wire[index : index + 1])
            if index % 97 == 0:
                await raw.writer.drain()
        await raw.writer.drain()
        assert (await raw.read_frame()).payload == b"a" * 300
        assert (await raw.read_frame()).payload == b"b" * 5000
    finally:
        await raw.aclose()


async def test_client_close_is_answered_with_its_code(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        await raw.send_frame(OPCODE_CLOSE, (4000).to_bytes(2, "big") + b"bye")
        assert (await raw.close_frame()).close_code == 4000
        # Then the server closes TCP.
        assert await asyncio.wait_for(raw.reader.read(), IO_TIMEOUT) == b""
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(OPCODE_CONTINUATION, b"orphan", True)], id="continuation-first"),
        pytest.param(
            [(OPCODE_TEXT, b"a", False), (OPCODE_TEXT, b"b", True)], id="new-message-mid-fragment"
        ),
        pytest.param([(OPCODE_PING, b"x", False)], id="fragmented-ping"),
        pytest.param([(OPCODE_PING, b"x" * 126, True)], id="long-ping"),
        pytest.param([(OPCODE_CLOSE, (1005).to_bytes(2, "big"), True)], id="reserved-close-code"),
        pytest.param([(OPCODE_CLOSE, b"\x03", True)], id="one-byte-close"),
    ],
)
async def test_framing_violations_close_with_1002(core_server, frames):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        for opcode, payload, fin in frames:
            raw.writer.write(encode_frame(opcode, payload, fin=fin))
        await raw.writer.drain()
        assert (await raw.close_frame()).close_code == 1002
    finally:
        await raw.aclose()


async def test_unknown_opcode_closes_with_1002(core_server):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        await raw.send_frame(0x3, b"reserved opcode")
        assert (await raw.close_frame()).close_code == 1002
    finally:
        await raw.aclose()


async def test_message_within_max_size_is_echoed(small_max_size_server):
    message = "y" * (MAX_SIZE - 1024)
    async with connect(small_max_size_server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send(message)
        assert await recv(websocket) == message


async def test_message_over_max_size_closes_with_1009(small_max_size_server):
    async with connect(small_max_size_server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send("z" * (70 * 1024))
        assert await close_code_after_recv(websocket) == 1009


async def test_binary_message_over_max_size_closes_with_1009(small_max_size_server):
    raw = await RawWebSocket.open(small_max_size_server.port, "/echo")
    try:
        await raw.send_frame(OPCODE_BINARY, bytes(MAX_SIZE + 1))
        assert (await raw.close_frame()).close_code == 1009
    finally:
        await raw.aclose()


def with_reserved_bit(frame: bytes) -> bytes:
    return bytes([frame[0] | 0x40]) + frame[1:]


@pytest.mark.parametrize(
    "held_back",
    [
        pytest.param("final-fragment", id="second-of-three-fragments"),
        pytest.param("rest-of-frame", id="middle-of-one-frame"),
    ],
)
async def test_invalid_utf8_closes_with_1007_before_the_message_ends(core_server, held_back):
    # 0xF4 0x90 0x80 0x80 would be U+110000: no valid text goes on from it.
    first, invalid, last = "κόσμε".encode(), b"\xf4\x90\x80\x80", b"edited"
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        if held_back == "final-fragment":
            raw.writer.write(encode_frame(OPCODE_TEXT, first, fin=False))
            raw.writer.write(encode_frame(OPCODE_CONTINUATION, invalid, fin=False))
        else:
            whole = encode_frame(OPCODE_TEXT, first + invalid + last)
            raw.writer.write(whole[: -len(last)])
        await raw.writer.drain()
        # The rest of the message is never sent: the close must come from what was.
        assert (await raw.close_frame()).close_code == 1007
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "violation",
    [
        pytest.param(with_reserved_bit(encode_frame(OPCODE_TEXT, b"after")), id="reserved-bit"),
        pytest.param(encode_frame(0x5, b""), id="reserved-opcode"),
        pytest.param(encode_frame(OPCODE_CONTINUATION, b"orphan"), id="stray-continuation"),
        pytest.param(encode_frame(OPCODE_PING, b"x", fin=False), id="fragmented-ping"),
    ],
)
async def test_message_before_a_violation_in_the_same_write_is_echoed_before_the_close(
    core_server, violation
):
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        raw.writer.write(encode_frame(OPCODE_TEXT, b"Hello, world!") + violation)
        await raw.writer.drain()
        echo = await raw.read_frame()
        assert (echo.opcode, echo.payload) == (OPCODE_TEXT, b"Hello, world!")
        close = await raw.read_frame()
        assert close.close_code == 1002
    finally:
        await raw.aclose()


async def _status_of_raw_head(port: int, head: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        status, _ = await read_http_head(reader)
        return status
    finally:
        writer.close()


_UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(f"GET /echo HTTP/1.0\r\nHost: x\r\n{_UPGRADE}\r\n", id="http-1.0"),
        pytest.param(f"GET /echo HTTP/1.1\r\n{_UPGRADE}\r\n", id="no-host"),
        pytest.param(
            f"GET /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n"
            f"Origin: https://b.example\r\n{_UPGRADE}\r\n",
            id="two-origins",
        ),
    ],
)
async def test_handshakes_rfc_6455_forbids_are_400(core_server, head):
    assert await _status_of_raw_head(core_server.port, head) == 400


async def test_the_same_handshake_with_one_origin_and_a_host_is_accepted(core_server):
    head = f"GET /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n{_UPGRADE}\r\n"
    assert await _status_of_raw_head(core_server.port, head) == 101


async def test_a_handler_that_closes_while_a_violation_is_held_sends_the_violation_code(
    core_server,
):
    # /json-binary answers one message and closes with the default 1000; the peer's
    # violation arrived first, so the close that goes out is the violation's 1002.
    raw = await RawWebSocket.open(core_server.port, "/json-binary")
    try:
        violation = encode_frame(0x5, b"")
        raw.writer.write(encode_frame(OPCODE_BINARY, b'{"n": 1}') + violation)
        await raw.writer.drain()
        reply = await raw.read_frame()
        assert (reply.opcode, reply.payload) == (OPCODE_BINARY, b'{"n":1}')
        assert (await raw.read_frame()).close_code == 1002
    finally:
        await raw.aclose()
