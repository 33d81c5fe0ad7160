"""The FastAPI docs' chat behaves the same with the native ConnectionManager
(examples/chat_native.py) as with the docs' own Python class (examples/chat.py)."""

import pytest
from core_server import REPO_DIR
from core_support import IO_TIMEOUT, http_get, recv
from websockets.asyncio.client import connect

EXAMPLES = ["examples.chat:app", "examples.chat_native:app"]

EXPECTED = {
    1: [
        "You wrote: one",
        "Client #1 says: one",
        "Client #2 says: two",
        "Client #3 says: three",
        "You wrote: hello all",
        "Client #1 says: hello all",
        "Client #2 left the chat",
        "Client #3 says: still here",
    ],
    2: [
        "You wrote: two",
        "Client #2 says: two",
        "Client #3 says: three",
        "Client #1 says: hello all",
    ],
    3: [
        "You wrote: three",
        "Client #3 says: three",
        "Client #1 says: hello all",
        "Client #2 left the chat",
        "You wrote: still here",
        "Client #3 says: still here",
        "Client #1 left the chat",
    ],
}


@pytest.fixture(scope="module")
def chat_servers(start_server_module):
    return {
        target: start_server_module(target, "--no-access-log", cwd=REPO_DIR) for target in EXAMPLES
    }


async def three_client_transcripts(server) -> dict[int, list[str]]:
    """Three clients join, talk and leave, one step at a time; every message each got.

    Each step reads, on each client, as many messages as the step should produce there;
    what they are is compared afterwards, so a missing, extra or reordered message shows
    up as a different transcript."""
    clients = {}
    transcripts: dict[int, list[str]] = {1: [], 2: [], 3: []}

    async def read(counts: dict[int, int]) -> None:
        for client_id, count in counts.items():
            transcripts[client_id] += [await recv(clients[client_id]) for _ in range(count)]

    async def join(client_id: int) -> None:
        url = server.ws_url(f"/ws/{client_id}")
        clients[client_id] = await connect(url, open_timeout=IO_TIMEOUT)

    await join(1)
    await clients[1].send("one")
    await read({1: 2})
    await join(2)
    await clients[2].send("two")
    await read({2: 2, 1: 1})
    await join(3)
    await clients[3].send("three")
    await read({3: 2, 1: 1, 2: 1})
    await clients[1].send("hello all")
    await read({1: 2, 2: 1, 3: 1})
    await clients[2].close()
    await read({1: 1, 3: 1})
    await clients[3].send("still here")
    await read({3: 2, 1: 1})
    await clients[1].close()
    await read({3: 1})
    await clients[3].close()
    return transcripts


async def test_chat_with_native_manager_sends_what_the_docs_class_sends(chat_servers):
    python_class, native = (chat_servers[target] for target in EXAMPLES)
    with_python_class = await three_client_transcripts(python_class)
    with_native = await three_client_transcripts(native)
    assert with_python_class == EXPECTED
    assert with_native == with_python_class


async def test_chat_with_native_manager_serves_the_same_page(chat_servers):
    pages = [await http_get(chat_servers[target].port, "/") for target in EXAMPLES]
    assert [page.status for page in pages] == [200, 200]
    assert pages[0].body == pages[1].body
