"""Sockets that end while a native ConnectionManager is broadcasting: the broadcasting
handler raises nothing and carries on, and the survivors get every broadcast in order."""

import asyncio
import json

import pytest
from core_support import IO_TIMEOUT, RawWebSocket, http_get, recv
from websockets.asyncio.client import ClientConnection, connect

SURVIVORS = 10
LEAVERS_EACH_WAY = 10  # closing cleanly, aborting the TCP connection, vanishing raw sockets


@pytest.fixture
def server(start_server):
    return start_server("apps.manager_apps:app", "--no-access-log")


class Received:
    """Every message each survivor got, awaitable until a count is reached."""

    def __init__(self, clients: int) -> None:
        self.messages: list[list[str]] = [[] for _ in range(clients)]
        self.changed = asyncio.Condition()

    async def read(self, index: int, client: ClientConnection) -> None:
        while True:
            message = await client.recv()
            async with self.changed:
                self.messages[index].append(message)
                self.changed.notify_all()

    def least(self) -> int:
        return min(len(messages) for messages in self.messages)

    async def wait_until_all_reach(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.least() >= count), IO_TIMEOUT)


async def wait_for_members(server, group: str, count: int) -> None:
    seen = (await http_get(server.port, f"/wait/{group}?members={count}")).json()
    assert "timed_out" not in seen, f"the manager still holds {seen['len']} sockets, not {count}"


async def test_sockets_closing_mid_broadcast_raise_nothing_in_the_broadcaster(server):
    group = "closing"

    async def member() -> ClientConnection:
        # An unbounded queue: members that read nothing still take in the close handshake.
        client = await connect(
            server.ws_url(f"/sub/{group}"), open_timeout=IO_TIMEOUT, max_queue=None
        )
        assert (await recv(client)).startswith("joined ")
        return client

    async def raw_member() -> RawWebSocket:
        raw = await RawWebSocket.open(server.port, f"/sub/{group}")
        assert (await raw.read_frame()).payload.startswith(b"joined ")
        return raw

    survivors = [await member() for _ in range(SURVIVORS)]
    closers = [await member() for _ in range(LEAVERS_EACH_WAY)]
    aborters = [await member() for _ in range(LEAVERS_EACH_WAY)]
    vanishers = [await raw_member() for _ in range(LEAVERS_EACH_WAY)]
    await wait_for_members(server, group, SURVIVORS + 3 * LEAVERS_EACH_WAY)

    received = Received(SURVIVORS)
    readers = [
        asyncio.ensure_future(received.read(index, client))
        for index, client in enumerate(survivors)
    ]
    try:
        async with connect(
            server.ws_url(f"/stream/{group}?pause=0.001"), open_timeout=IO_TIMEOUT
        ) as publisher:
            await received.wait_until_all_reach(50)
            # End two thirds of the members every way a socket can end, all at once, while
            # the publisher keeps broadcasting.
            for raw in vanishers:
                raw.vanish()
            for client in aborters:
                client.transport.abort()
            await asyncio.gather(*(client.close() for client in closers))
            await wait_for_members(server, group, SURVIVORS)
            # Broadcasting went on after they left.
            await received.wait_until_all_reach(received.least() + 50)

            await publisher.send("stop")
            report = json.loads(await recv(publisher))
        assert report["exception"] is None, report
        assert report["members"] == SURVIVORS
        sent = report["sent"]
        await received.wait_until_all_reach(sent)
    finally:
        for reader in readers:
            reader.cancel()
    expected = [str(index) for index in range(sent)]
    for index, messages in enumerate(received.messages):
        assert messages == expected, f"survivor {index} got another sequence"
    for client in survivors:
        await client.close()
