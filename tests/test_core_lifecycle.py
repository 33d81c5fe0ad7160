"""How connections end: handler errors, vanished peers, misuse, load and shutdown."""

import asyncio
import signal
import uuid

import pytest
from core_support import RawWebSocket, close_code_after_recv, outcome, recv
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

CONCURRENT_CLIENTS = 500
SHUTDOWN_CLIENTS = 20
SHUTDOWN_SECONDS = 5.0


def new_key() -> str:
    return uuid.uuid4().hex


async def assert_echoes(websocket, text: str) -> None:
    await websocket.send(text)
    assert await recv(websocket) == text


async def test_handler_exception_closes_only_that_socket_with_1011(core_server):
    async with connect(core_server.ws_url("/echo"), open_timeout=10) as bystander:
        await assert_echoes(bystander, "before")
        async with connect(core_server.ws_url("/raise-after-message"), open_timeout=10) as failing:
            await failing.send("trigger")
            assert await close_code_after_recv(failing) == 1011
        await assert_echoes(bystander, "after")
    async with connect(core_server.ws_url("/echo"), open_timeout=10) as newcomer:
        await assert_echoes(newcomer, "new connections still served")


async def test_peer_vanishing_mid_receive_is_disconnect_1006(core_server):
    key = new_key()
    raw = await RawWebSocket.open(core_server.port, f"/record-disconnect/{key}")
    raw.vanish()
    seen = await outcome(core_server.port, key)
    assert "WebSocketDisconnect" in seen["kinds"], seen
    assert seen["code"] == 1006, seen


async def test_client_close_code_and_reason_reach_handler(core_server):
    key = new_key()
    async with connect(core_server.ws_url(f"/record-disconnect/{key}"), open_timeout=10) as ws:
        await ws.close(code=4001, reason="done here")
    seen = await outcome(core_server.port, key)
    assert "WebSocketDisconnect" in seen["kinds"], seen
    assert (seen["code"], seen["reason"]) == (4001, "done here"), seen


async def test_send_after_peer_closed_raises_websocket_disconnect(core_server):
    key = new_key()
    async with connect(core_server.ws_url(f"/send-after-disconnect/{key}"), open_timeout=10):
        pass  # leaving the block closes with 1000
    seen = await outcome(core_server.port, key)
    assert "WebSocketDisconnect" in seen["kinds"], seen


async def test_send_after_own_close_raises_websocket_disconnect(core_server):
    key = new_key()
    async with connect(core_server.ws_url(f"/send-after-own-close/{key}"), open_timeout=10) as ws:
        assert await close_code_after_recv(ws) == 1000
    seen = await outcome(core_server.port, key)
    assert "WebSocketDisconnect" in seen["kinds"], seen


async def test_send_to_vanished_peer_raises_websocket_disconnect(core_server):
    key = new_key()
    raw = await RawWebSocket.open(core_server.port, f"/send-until-error/{key}")
    await raw.read_frame()  # the handler is sending
    raw.vanish()
    seen = await outcome(core_server.port, key)
    assert "WebSocketDisconnect" in seen["kinds"], seen


async def test_receive_before_accept_raises_runtime_error_naming_accept(core_server):
    key = new_key()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(core_server.ws_url(f"/receive-before-accept/{key}"), open_timeout=10):
            pass
    assert refused.value.response.status_code == 403
    seen = await outcome(core_server.port, key)
    assert "RuntimeError" in seen["kinds"], seen
    assert "accept" in seen["message"], seen


async def test_500_concurrent_clients_all_echo(core_server):
    url = core_server.ws_url("/echo")
    clients = await asyncio.gather(
        *(connect(url, open_timeout=30) for _ in range(CONCURRENT_CLIENTS))
    )
    try:
        await asyncio.gather(
            *(assert_echoes(client, f"client {index}") for index, client in enumerate(clients))
        )
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_sigterm_closes_every_client_with_1001_and_exits_0(start_server):
    server = start_server("apps.core:app")
    url = server.ws_url("/echo")
    clients = await asyncio.gather(
        *(connect(url, open_timeout=10) for _ in range(SHUTDOWN_CLIENTS))
    )
    await asyncio.gather(*(assert_echoes(client, "up") for client in clients))

    server.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code_after_recv(client) for client in clients))

    assert codes == [1001] * SHUTDOWN_CLIENTS
    assert await asyncio.to_thread(server.wait, SHUTDOWN_SECONDS) == 0


async def test_sigterm_without_clients_exits_0(start_server):
    server = start_server("apps.core:app")
    server.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, SHUTDOWN_SECONDS) == 0
