"""Parked receives woken by the engine: the handler resumes in its own task and context,
and timeouts, cancellation and closes from other handlers behave as with loop futures."""

import asyncio
import json

import pytest
from core_support import recv
from websockets.asyncio.client import connect


@pytest.fixture(scope="module")
def server(start_server_module):
    return start_server_module("apps.waits:app")


async def test_each_handler_resumes_in_its_own_task_and_context(server):
    async with (
        connect(server.ws_url("/context/ada"), open_timeout=10) as ada,
        connect(server.ws_url("/context/bob"), open_timeout=10) as bob,
    ):
        for round_ in range(20):
            # Both parked: the two messages arrive in one batch more often than not.
            await asyncio.gather(ada.send(f"a{round_}"), bob.send(f"b{round_}"))
            assert await recv(ada) == f"ada True a{round_}"
            assert await recv(bob) == f"bob True b{round_}"


async def test_a_timed_out_receive_loses_no_message(server):
    async with connect(server.ws_url("/timeout"), open_timeout=10) as ws:
        assert await recv(ws) == "timed out"
        await ws.send("late")
        assert await recv(ws) == "then late"


async def test_a_cancelled_receive_loses_no_message(server):
    async with connect(server.ws_url("/cancelled"), open_timeout=10) as ws:
        assert await recv(ws) == "cancelled"
        await ws.send("after")
        assert await recv(ws) == "then after"


async def test_receives_made_before_they_are_awaited_each_take_one_message(server):
    async with connect(server.ws_url("/held"), open_timeout=10) as ws:
        await ws.send("one")
        await ws.send(b"two")
        await ws.send("three")
        assert json.loads(await recv(ws)) == {"texts": ["one", "two", "three"], "distinct": True}


async def test_a_woken_handler_can_close_another_parked_socket(server):
    async with (
        connect(server.ws_url("/parked/first"), open_timeout=10) as first,
        connect(server.ws_url("/parked/second"), open_timeout=10) as second,
    ):
        await first.send("hello")
        assert await recv(first) == "first hello"
        await first.send("close second")
        assert await recv(first) == "first close second"
        await second.wait_closed()
        assert (second.close_code, second.close_reason) == (4000, "closed by first")
        assert await recv(first) == "second ended 4000"
        await first.send("still here")
        assert await recv(first) == "first still here"
