"""``server: ferrosock`` and ``date`` on every response the engine writes (HTTP answers,
refusals, the 101), as uvicorn sends its own; ``--no-server-header`` and
``--no-date-header`` leave them out. Read off raw sockets, so every header line is seen."""

from __future__ import annotations

import asyncio
import base64
import os

from core_support import IO_TIMEOUT

UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"


async def head(port: int, path: str, extra: str = "") -> list[str]:
    """The status line and header lines of the answer to one GET on a fresh connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n"
        writer.write(request.encode())
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        return raw.decode("latin-1").split("\r\n")[:-2]
    finally:
        writer.close()


def websocket_upgrade() -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    return f"{UPGRADE}Sec-WebSocket-Key: {key}\r\n"


def named(lines: list[str], name: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith(name)]


async def answers(port: int) -> dict[str, list[str]]:
    """Status and headers of an HTTP answer, a 404, a refused handshake and a 101."""
    return {
        "http": await head(port, "/cookies"),
        "not found": await head(port, "/nowhere"),
        "refused": await head(port, "/nowhere", websocket_upgrade()),
        "upgrade": await head(port, "/greeting", websocket_upgrade()),
    }


async def test_server_and_date_headers_are_on_every_response_by_default(start_server):
    server = start_server("apps.deploy:app")
    seen = await answers(server.port)
    assert [lines[0].split()[1] for lines in seen.values()] == ["200", "404", "403", "101"]
    for what, lines in seen.items():
        assert named(lines, "server") == ["ferrosock"], (what, lines)
        assert len(named(lines, "date")) == 1 and named(lines, "date")[0].endswith(" GMT"), (
            what,
            lines,
        )


async def test_an_app_server_header_is_kept_and_not_doubled(start_server):
    server = start_server("apps.deploy:app")
    lines = await head(server.port, "/own-server-header")
    assert named(lines, "server") == ["the app's own"]


async def test_no_server_header_and_no_date_header_leave_them_out(start_server):
    server = start_server("apps.deploy:app", "--no-server-header", "--no-date-header")
    seen = await answers(server.port)
    assert [lines[0].split()[1] for lines in seen.values()] == ["200", "404", "403", "101"]
    for what, lines in seen.items():
        assert named(lines, "server") == [] and named(lines, "date") == [], (what, lines)
