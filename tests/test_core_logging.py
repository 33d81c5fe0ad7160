"""The server logs its start-up, each HTTP request, each WebSocket accept and handler errors."""

from core_server import STARTUP_LINE
from core_support import close_code_after_recv, http_get
from websockets.asyncio.client import connect

LOG_WAIT_SECONDS = 10.0


async def test_startup_line_names_the_bound_address(core_server):
    line = await core_server.stderr_line(STARTUP_LINE.search, LOG_WAIT_SECONDS)
    assert f"http://127.0.0.1:{core_server.port}" in line


async def test_http_request_is_logged_with_method_path_and_status(core_server):
    response = await http_get(core_server.port, "/items/314159")
    assert response.status == 200
    line = await core_server.stderr_line(lambda line: "/items/314159" in line, LOG_WAIT_SECONDS)
    assert "GET" in line
    assert "200" in line


async def test_websocket_accept_is_logged_with_path(core_server):
    async with connect(core_server.ws_url("/accept-and-close"), open_timeout=10) as websocket:
        assert await close_code_after_recv(websocket) == 1000
    line = await core_server.stderr_line(
        lambda line: "/accept-and-close" in line and "accept" in line.lower(), LOG_WAIT_SECONDS
    )
    assert "127.0.0.1" in line


async def test_handler_exception_traceback_is_logged(core_server):
    async with connect(core_server.ws_url("/raise-after-message"), open_timeout=10) as websocket:
        await websocket.send("trigger")
        assert await close_code_after_recv(websocket) == 1011
    await core_server.stderr_line(lambda line: "Traceback" in line, LOG_WAIT_SECONDS)
    await core_server.stderr_line(
        lambda line: "ValueError: boom from the handler" in line, LOG_WAIT_SECONDS
    )
