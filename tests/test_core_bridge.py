"""The engine bridge finishes awaitables without a loop future when data is ready."""

import asyncio

from core_support import http_get
from websockets.asyncio.client import connect

MESSAGES = 10_000
MAX_PARK_RATIO = 0.10


async def bridge_stats(port: int) -> dict[str, int]:
    response = await http_get(port, "/stats")
    assert response.status == 200, response
    return response.json()


async def test_echo_with_many_messages_in_flight_rarely_parks(core_server):
    async with connect(core_server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send("warm-up")
        assert await websocket.recv() == "warm-up"
        before = await bridge_stats(core_server.port)

        async def send_all() -> None:
            for index in range(MESSAGES):
                await websocket.send(f"message {index}")

        async def receive_all() -> list[str]:
            return [await websocket.recv() for _ in range(MESSAGES)]

        _, received = await asyncio.gather(send_all(), receive_all())
        after = await bridge_stats(core_server.port)

    assert received == [f"message {index}" for index in range(MESSAGES)]
    parks = after["futures_created"] - before["futures_created"]
    fast = after["fast_completions"] - before["fast_completions"]
    assert parks < MESSAGES * MAX_PARK_RATIO, (parks, fast, before, after)
    # 10 000 receives and 10 000 sends went through the bridge; most finished at once.
    assert fast >= MESSAGES, (parks, fast, before, after)
