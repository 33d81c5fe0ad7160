"""The native ConnectionManager's fan-out at scale: one publisher, a thousand subscribers."""

import asyncio
import json
import resource

from core_support import IO_TIMEOUT, http_get, recv
from websockets.asyncio.client import ClientConnection, connect

SUBSCRIBERS = 1000
BROADCASTS = 20
CONNECTING_AT_ONCE = 100


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def subscribe(server, group: str, count: int) -> list[ClientConnection]:
    """``count`` members of ``group``, each registered (it has read its ``joined`` line)."""
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def one() -> ClientConnection:
        async with gate:
            client = await connect(
                server.ws_url(f"/sub/{group}"),
                open_timeout=IO_TIMEOUT,
                ping_interval=None,
                close_timeout=1,
            )
            joined = await recv(client)
            assert joined.startswith("joined "), joined
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_every_broadcast_reaches_each_of_1000_subscribers_in_order(start_server):
    raise_open_files_limit()
    server = start_server("apps.manager_apps:app", "--no-access-log")
    clients = await subscribe(server, "fanout", SUBSCRIBERS)
    try:
        async with connect(server.ws_url("/pub/fanout"), open_timeout=IO_TIMEOUT) as publisher:
            expected = [f"broadcast {index}" for index in range(BROADCASTS)]
            for text in expected:
                await publisher.send(json.dumps({"op": "broadcast", "text": text}))

            async def received(client: ClientConnection) -> list[str]:
                return [await recv(client) for _ in expected]

            everything = await asyncio.gather(*(received(client) for client in clients))
        wrong = [index for index, got in enumerate(everything) if got != expected]
        assert not wrong, f"{len(wrong)} subscribers got another sequence: {everything[wrong[0]]}"

        state = (await http_get(server.port, "/state/fanout")).json()
        assert state["len"] == SUBSCRIBERS
        assert state["stats"]["broadcasts"] == BROADCASTS
        assert state["stats"]["delivered"] == SUBSCRIBERS * BROADCASTS
        assert state["stats"]["dropped"] == 0
        assert state["stats"]["closed_slow"] == 0
    finally:
        await asyncio.gather(*(client.close() for client in clients))
