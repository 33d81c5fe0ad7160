"""Client helpers for the core tests: a small HTTP/1.1 GET, raw WebSocket frames, close codes.

Raw sockets are used where a real client library would refuse to misbehave: handshakes
with missing headers, unmasked frames, invalid UTF-8, a peer that vanishes mid-stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

IO_TIMEOUT = 10.0

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


async def read_http_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and lower-cased headers of a response, read up to the blank line."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(chunks)
            chunks.append(chunk[:-2])
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def http_request(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> HttpResponse:
    """One request on a fresh connection (``Connection: close``)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status, response_headers = await read_http_head(reader)
        body = await asyncio.wait_for(_read_body(reader, response_headers), IO_TIMEOUT)
        return HttpResponse(status, response_headers, body)
    finally:
        writer.close()


async def http_get(port: int, path: str) -> HttpResponse:
    return await http_request(port, path)


# -- raw WebSocket --------------------------------------------------------------------


def handshake_headers(path: str, port: int, **overrides: str | None) -> dict[str, str]:
    """A valid client handshake; an override of ``None`` leaves that header out."""
    headers: dict[str, str | None] = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return {name: value for name, value in headers.items() if value is not None}


def encode_frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OPCODE_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]


class RawWebSocket:
    """A hand-driven client connection, for input a real client would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> RawWebSocket:
        """Connect and complete a valid handshake (asserts 101)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT
        )
        raw = cls(reader, writer)
        status, headers = await raw.handshake(path, handshake_headers(path, port))
        assert status == 101, f"handshake to {path} answered {status} {headers}"
        return raw

    async def handshake(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        return await read_http_head(self.reader)

    async def send_frame(self, opcode: int, payload: bytes, *, masked: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, masked=masked))
        await self.writer.drain()

    async def read_frame(self) -> Frame:
        return await asyncio.wait_for(self._read_frame(), IO_TIMEOUT)

    async def _read_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        mask = await self.reader.readexactly(4) if second & 0x80 else b""
        payload = await self.reader.readexactly(length)
        if mask:
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        return Frame(first & 0x0F, payload)

    async def close_frame(self) -> Frame:
        """Read frames until the server's close frame and return it."""

        async def until_close() -> Frame:
            while True:
                frame = await self._read_frame()
                if frame.opcode == OPCODE_CLOSE:
                    return frame

        return await asyncio.wait_for(until_close(), IO_TIMEOUT)

    def vanish(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass


async def raw_handshake(port: int, path: str, headers: dict[str, str]) -> HttpResponse:
    """Send a (possibly malformed) handshake and return the server's answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
    raw = RawWebSocket(reader, writer)
    try:
        status, response_headers = await raw.handshake(path, headers)
        return HttpResponse(status, response_headers)
    finally:
        await raw.aclose()


# -- websockets-library helpers -------------------------------------------------------


async def close_code_after_recv(websocket: ClientConnection) -> int | None:
    """Receive until the server closes; the close code the client received."""

    async def drain() -> int | None:
        try:
            while True:
                await websocket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None

    return await asyncio.wait_for(drain(), IO_TIMEOUT)


async def recv(websocket: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(websocket.recv(), IO_TIMEOUT)


async def outcome(port: int, key: str) -> dict:
    """What a recording handler in tests/apps/core.py saw (``GET /outcome/{key}`` waits)."""
    response = await http_get(port, f"/outcome/{key}")
    assert response.status == 200, response
    seen = response.json()
    assert "timed_out" not in seen, f"the handler recorded nothing under {key}"
    return seen


# -- an app to reload -----------------------------------------------------------------

# Module text whose /version route sends ``version``: write it with one version, change it,
# and see which code the server runs.
VERSIONED_APP = """
from ferrosock import App, WebSocket

app = App()


@app.websocket("/version")
async def version(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text({version!r})
    await websocket.close()
"""


async def app_version(port: int) -> str:
    """What ``VERSIONED_APP``'s /version route says on ``port``."""
    async with connect(f"ws://127.0.0.1:{port}/version", open_timeout=IO_TIMEOUT) as websocket:
        return await asyncio.wait_for(websocket.recv(), IO_TIMEOUT)
