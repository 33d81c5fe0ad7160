"""The native ConnectionManager's rooms, ``exclude``, ``send_to`` and what it reports.

Everything one manager sends goes out in the order it was asked, so "X did not get the
message" is checked without waiting for nothing: after the message under test, a *fence*
is broadcast to everyone, and X's next message must be the fence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from core_server import REPO_DIR
from core_support import IO_TIMEOUT, RawWebSocket, http_get, outcome, recv
from websockets.asyncio.client import ClientConnection, connect


@pytest.fixture(scope="module")
def server(start_server_module):
    return start_server_module("apps.manager_apps:app", "--no-access-log")


@dataclass
class Member:
    """A client of ``/room/{group}/{room}/{name}`` (see tests/apps/manager_apps.py)."""

    websocket: ClientConnection
    id: int
    name: str

    @classmethod
    async def join(cls, server, group: str, room: str, name: str) -> Member:
        websocket = await connect(
            server.ws_url(f"/room/{group}/{room}/{name}"), open_timeout=IO_TIMEOUT
        )
        hello = json.loads(await recv(websocket))
        return cls(websocket, hello["id"], name)

    async def command(self, op: str, **arguments) -> None:
        await self.websocket.send(json.dumps({"op": op, **arguments}))

    async def answer(self, op: str, **arguments) -> dict:
        """Send a command and return its JSON answer (the member's next message)."""
        await self.command(op, **arguments)
        return json.loads(await self.next())

    async def next(self) -> str | bytes:
        return await recv(self.websocket)

    async def close(self) -> None:
        await self.websocket.close()


async def fence(sender: Member, members: list[Member], label: str) -> None:
    """Broadcast ``label`` to everyone; each of ``members`` must get it as its next message."""
    await sender.command("all", text=label)
    for member in members:
        assert await member.next() == label, f"{member.name} got something before {label!r}"


async def state(server, group: str) -> dict:
    response = await http_get(server.port, f"/state/{group}")
    assert response.status == 200
    return response.json()


async def wait_for_members(server, group: str, count: int) -> dict:
    response = await http_get(server.port, f"/wait/{group}?members={count}")
    seen = response.json()
    assert "timed_out" not in seen, f"the manager still holds {seen['len']} sockets, not {count}"
    return seen


async def test_broadcast_to_a_room_reaches_only_its_members(server):
    alice = await Member.join(server, "isolated", "a", "alice")
    amy = await Member.join(server, "isolated", "a", "amy")
    bob = await Member.join(server, "isolated", "b", "bob")
    ben = await Member.join(server, "isolated", "b", "ben")
    everyone = [alice, amy, bob, ben]

    await alice.command("say", text="hello a")
    assert await alice.next() == "alice: hello a"
    assert await amy.next() == "alice: hello a"
    await bob.command("say", text="hello b")
    assert await bob.next() == "bob: hello b"
    assert await ben.next() == "bob: hello b"
    await fence(alice, everyone, "fence 1")

    # Broadcasting to a room one is not in reaches that room only.
    await bob.command("say", text="visiting", room="a")
    assert await alice.next() == "bob: visiting"
    assert await amy.next() == "bob: visiting"
    await fence(bob, everyone, "fence 2")

    # A room nobody is in: nobody.
    await amy.command("say", text="into the void", room="nobody-here")
    await fence(amy, everyone, "fence 3")
    for member in everyone:
        await member.close()


async def test_broadcast_exclude_skips_exactly_that_socket(server):
    alice = await Member.join(server, "exclude", "a", "alice")
    amy = await Member.join(server, "exclude", "a", "amy")
    ann = await Member.join(server, "exclude", "a", "ann")

    await alice.command("say", text="not to me", exclude_self=True)
    assert await amy.next() == "alice: not to me"
    assert await ann.next() == "alice: not to me"
    await fence(amy, [alice, amy, ann], "fence")
    for member in (alice, amy, ann):
        await member.close()


async def test_send_to_reaches_exactly_one_socket(server):
    alice = await Member.join(server, "send-to", "a", "alice")
    amy = await Member.join(server, "send-to", "a", "amy")
    bob = await Member.join(server, "send-to", "b", "bob")
    everyone = [alice, amy, bob]

    assert await bob.answer("to", id=amy.id, text="psst, amy") == {"sent": True}
    assert await amy.next() == "psst, amy"
    await fence(alice, everyone, "fence 1")

    # To oneself: the message goes out before the answer, in the order they were asked.
    await amy.command("to", id=amy.id, text="note to self")
    assert await amy.next() == "note to self"
    assert json.loads(await amy.next()) == {"sent": True}
    await fence(alice, everyone, "fence 2")

    unknown = max(member.id for member in everyone) + 1_000_000
    assert await alice.answer("to", id=unknown, text="nobody") == {"sent": False}
    await fence(alice, everyone, "fence 3")
    for member in everyone:
        await member.close()


async def test_broadcast_json_and_bytes_reach_the_room_in_kind(server):
    alice = await Member.join(server, "kinds", "a", "alice")
    amy = await Member.join(server, "kinds", "a", "amy")
    bob = await Member.join(server, "kinds", "b", "bob")

    await alice.command("json", data={"text": "héllo", "n": [1, 2]})
    await alice.command("bytes", hex="00ff10")
    for member in (alice, amy):
        assert await member.next() == '{"text":"héllo","n":[1,2]}'
        assert await member.next() == b"\x00\xff\x10"
    await fence(alice, [alice, amy, bob], "fence")
    for member in (alice, amy, bob):
        await member.close()


async def test_len_rooms_and_members_report_membership(server):
    group = "report"
    alice = await Member.join(server, group, "a", "alice")
    amy = await Member.join(server, group, "a", "amy")
    bob = await Member.join(server, group, "b", "bob")
    everyone = [alice, amy, bob]

    seen = await state(server, group)
    assert seen["len"] == 3
    assert seen["rooms"] == ["a", "b"]
    assert seen["members"] == {"a": sorted([alice.id, amy.id]), "b": [bob.id]}
    assert seen["active"] == sorted(member.id for member in everyone)

    assert await alice.answer("join", room="c") == {"ok": "join"}
    seen = await state(server, group)
    assert seen["len"] == 3
    assert seen["rooms"] == ["a", "b", "c"]
    assert seen["members"]["c"] == [alice.id]
    await bob.command("say", text="to c", room="c")
    assert await alice.next() == "bob: to c"
    await fence(bob, everyone, "fence 1")

    assert await alice.answer("leave", room="a") == {"ok": "leave"}
    seen = await state(server, group)
    assert seen["len"] == 3, "leaving a room is not leaving the manager"
    assert seen["members"] == {"a": [amy.id], "b": [bob.id], "c": [alice.id]}
    await amy.command("say", text="a without alice")
    assert await amy.next() == "amy: a without alice"
    await fence(amy, everyone, "fence 2")

    assert await alice.answer("leave", room="c") == {"ok": "leave"}
    seen = await state(server, group)
    assert seen["rooms"] == ["a", "b"], "an empty room is gone"
    assert seen["len"] == 3

    assert await bob.answer("disconnect") == {"ok": "disconnect"}
    seen = await state(server, group)
    assert seen["len"] == 2
    assert seen["rooms"] == ["a"]
    assert seen["active"] == sorted([alice.id, amy.id])
    await fence(alice, [alice, amy], "fence 3")
    # Bob is no longer a member: its next message is an answer, not the fence.
    assert await bob.answer("to", id=amy.id, text="still here?") == {"sent": True}
    assert await amy.next() == "still here?"
    for member in everyone:
        await member.close()


async def test_a_socket_that_ends_leaves_the_manager_and_all_its_rooms(server):
    group = "self-leave"
    alice = await Member.join(server, group, "a", "alice")
    amy = await Member.join(server, group, "a", "amy")
    bob = await Member.join(server, group, "b", "bob")
    for room in ("c", "d"):
        assert await alice.answer("join", room=room) == {"ok": "join"}
        assert await bob.answer("join", room=room) == {"ok": "join"}
    raw = await RawWebSocket.open(server.port, f"/room/{group}/c/vanisher")
    vanisher_id = json.loads((await raw.read_frame()).payload)["id"]
    seen = await state(server, group)
    assert seen["len"] == 4
    assert seen["rooms"] == ["a", "b", "c", "d"]
    assert len(seen["members"]["c"]) == 3

    # A clean close: the handler never calls disconnect.
    await alice.close()
    seen = await wait_for_members(server, group, 3)
    assert alice.id not in seen["active"]
    assert seen["members"] == {
        "a": [amy.id],
        "b": [bob.id],
        "c": sorted([bob.id, vanisher_id]),
        "d": [bob.id],
    }

    # A peer that drops the TCP connection without a close frame.
    raw.vanish()
    seen = await wait_for_members(server, group, 2)
    assert seen["members"] == {"a": [amy.id], "b": [bob.id], "c": [bob.id], "d": [bob.id]}
    assert seen["active"] == sorted([amy.id, bob.id])

    # The survivors still get what is broadcast to their rooms.
    await bob.command("say", text="after", room="c")
    assert await bob.next() == "bob: after"
    await fence(amy, [amy, bob], "fence")

    await bob.close()
    seen = await wait_for_members(server, group, 1)
    assert seen["rooms"] == ["a"]
    await amy.close()
    seen = await wait_for_members(server, group, 0)
    assert seen["rooms"] == []
    assert seen["members"] == {}


async def test_handler_that_sees_the_disconnect_finds_its_socket_gone(server):
    """When the handler learns its socket ended, the manager no longer counts it (so code in
    ``except WebSocketDisconnect`` sees ``len(manager)``, ``rooms()`` and
    ``active_connections`` without it). Repeated: a wrong order shows up as a race."""
    group = "gone-on-disconnect"
    stayer = await Member.join(server, group, "a", "stayer")
    for index in range(200):
        leaver = await Member.join(server, group, "a", f"leaver-{index}")
        await leaver.close()
        seen = await outcome(server.port, f"{group}:leaver-{index}")
        assert seen["close_code"] == 1000
        assert seen["still_member"] is False, f"run {index}: {seen}"
        assert seen["members"] == 1, f"run {index}: {seen}"
        assert seen["rooms"] == ["a"]
    await stayer.close()


# -- examples/rooms.py ------------------------------------------------------------------


async def test_rooms_example_keeps_each_room_to_itself(start_server):
    example = start_server("examples.rooms:app", cwd=REPO_DIR)

    async def join(room: str, name: str) -> ClientConnection:
        client = await connect(example.ws_url(f"/ws/{room}/{name}"), open_timeout=IO_TIMEOUT)
        assert await recv(client) == f"{name} joined {room}"
        return client

    page = await http_get(example.port, "/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")

    alice = await join("red", "alice")
    bob = await join("blue", "bob")
    amy = await join("red", "amy")
    assert await recv(alice) == "amy joined red"

    await alice.send("hi red")
    assert await recv(alice) == "alice: hi red"
    assert await recv(amy) == "alice: hi red"
    await bob.send("hi blue")
    assert await recv(bob) == "bob: hi blue"

    await amy.close()
    assert await recv(alice) == "amy left red"
    await alice.send("alone")
    assert await recv(alice) == "alice: alone"
    # Bob heard nothing from red: his next message is his own.
    await bob.send("still blue")
    assert await recv(bob) == "bob: still blue"
    await alice.close()
    await bob.close()
