"""The engine bridge finishes awaitables without a loop future when data is ready.

The client writes all its frames in one burst, so the messages are already on the wire
(in the server's socket buffer) while the handler works through them, and reads the
echoes concurrently. A ``receive_text`` then almost always finds its message in the inbox
and a ``send_text`` room in the outbox; only the rare real wait may park on a loop future.
"""

import asyncio

from core_support import OPCODE_TEXT, RawWebSocket, encode_frame, http_get

MESSAGES = 10_000
MAX_PARK_RATIO = 0.10


async def bridge_stats(port: int) -> dict[str, int]:
    response = await http_get(port, "/stats")
    assert response.status == 200, response
    return response.json()


async def test_echo_with_many_messages_in_flight_rarely_parks(core_server):
    messages = [f"message {index}".encode() for index in range(MESSAGES)]
    burst = b"".join(encode_frame(OPCODE_TEXT, message) for message in messages)
    raw = await RawWebSocket.open(core_server.port, "/echo")
    try:
        before = await bridge_stats(core_server.port)

        async def send_all() -> None:
            raw.writer.write(burst)
            await raw.writer.drain()

        async def receive_all() -> list[bytes]:
            return [(await raw.read_frame()).payload for _ in messages]

        _, echoed = await asyncio.gather(send_all(), receive_all())
        after = await bridge_stats(core_server.port)
    finally:
        await raw.aclose()

    assert echoed == messages
    grew = {name: after[name] - before[name] for name in after if name in before}
    # 10 000 receives and 10 000 sends went through the bridge; nearly all finish at once.
    assert grew["fast_completions"] >= MESSAGES, grew
    assert grew["futures_created"] < MESSAGES * MAX_PARK_RATIO, grew
