"""The examples in examples/ run on the real server and behave as their docs say."""

import os

import pytest
from core_server import REPO_DIR
from core_support import http_get, recv
from websockets.asyncio.client import connect


@pytest.fixture(scope="module")
def chat_server(start_server_module):
    return start_server_module("examples.chat:app", cwd=REPO_DIR)


@pytest.fixture(scope="module")
def echo_server(start_server_module):
    return start_server_module("examples.echo:app", cwd=REPO_DIR)


async def test_chat_page_is_served_as_html(chat_server):
    response = await http_get(chat_server.port, "/")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.body.decode()
    assert "<h1>WebSocket Chat</h1>" in page
    assert "ws://localhost:8000/ws/${client_id}" in page


async def test_chat_personal_message_broadcast_and_leave(chat_server):
    async def join(client_id: int):
        return await connect(chat_server.ws_url(f"/ws/{client_id}"), open_timeout=10)

    async def say(client, client_id: int, text: str) -> None:
        """Send, then check the sender's personal echo and its own copy of the broadcast."""
        await client.send(text)
        assert await recv(client) == f"You wrote: {text}"
        assert await recv(client) == f"Client #{client_id} says: {text}"

    # Each client speaks once right after joining: its answer proves the server has added
    # it to the manager, so every later broadcast must reach it.
    first = await join(1)
    await say(first, 1, "one")
    second = await join(2)
    await say(second, 2, "two")
    assert await recv(first) == "Client #2 says: two"
    third = await join(3)
    await say(third, 3, "three")
    assert await recv(first) == "Client #3 says: three"
    assert await recv(second) == "Client #3 says: three"

    await say(first, 1, "hello all")
    assert await recv(second) == "Client #1 says: hello all"
    assert await recv(third) == "Client #1 says: hello all"

    await second.close()
    assert await recv(first) == "Client #2 left the chat"
    assert await recv(third) == "Client #2 left the chat"

    await say(third, 3, "still here")
    assert await recv(first) == "Client #3 says: still here"
    await first.close()
    assert await recv(third) == "Client #1 left the chat"
    await third.close()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("", id="empty-text"),
        pytest.param("héllo 🌍", id="unicode-text"),
        pytest.param("é🌍abc" * (70 * 1024 // 10), id="70KB-text"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param(bytes(range(256)) * 4, id="all-byte-values"),
        pytest.param(os.urandom(70 * 1024), id="70KB-bytes"),
    ],
)
async def test_echo_answers_text_with_text_and_bytes_with_bytes(echo_server, message):
    async with connect(echo_server.ws_url("/ws"), open_timeout=10) as websocket:
        await websocket.send(message)
        answer = await recv(websocket)
        assert type(answer) is type(message)
        assert answer == message


async def test_echo_keeps_message_order_and_kinds(echo_server):
    messages = [f"text {index}" if index % 2 else f"bytes {index}".encode() for index in range(50)]
    async with connect(echo_server.ws_url("/ws"), open_timeout=10) as websocket:
        for message in messages:
            await websocket.send(message)
        assert [await recv(websocket) for _ in messages] == messages


@pytest.mark.parametrize(
    "message", ["", "héllo 🌍", "x" * (70 * 1024)], ids=["empty", "unicode", "70KB"]
)
async def test_text_echo_route(echo_server, message):
    async with connect(echo_server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send(message)
        assert await recv(websocket) == message
