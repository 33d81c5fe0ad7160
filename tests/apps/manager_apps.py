"""The app behind tests/test_manager_*.py and tests/test_heartbeat.py.

Each test names a *group*; a group is one manager, made on first use: a native
``ConnectionManager`` (slow-consumer policy "drop" when the group name starts with
``drop``, "close" when it starts with ``close`` or ``slow-close``, else the default
"wait"), or the FastAPI docs' Python class when it starts with ``python``.

- ``/sub/{group}``: a member; sends ``joined <id>`` once registered, answers ``latency``
  with its ``websocket.latency`` and records how it ended under ``<group>:<id>``.
- ``/pub/{group}``: a publisher (not a member) driven by JSON commands (see ``publish``).
- ``/room/{group}/{room}/{name}``: a member of ``room`` driven by JSON commands
  (see ``room_member``); records how it ended under ``<group>:<name>``.
- ``/stream/{group}``: broadcasts ``0``, ``1``, ... until told ``stop``.
- ``GET /state/{group}``, ``GET /wait/{group}?members=N``: what the manager reports.

Handlers never call ``disconnect`` unless a test asks for it: sockets must leave their
manager by themselves.
"""

import asyncio
import json

from apps.core import describe_exception, outcome, record_outcome
from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect

app = App()
app.add_api_route("/outcome/{key}", outcome)

WAIT_SECONDS = 10.0
WAIT_STEP_SECONDS = 0.005


class DocsConnectionManager:
    """The FastAPI docs' class, unchanged."""

    def __init__(self):
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket):
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket):
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket):
        await websocket.send_text(message)

    async def broadcast(self, message: str):
        for connection in self.active_connections:
            await connection.send_text(message)


_managers: dict[str, ConnectionManager | DocsConnectionManager] = {}


def manager_for(group: str) -> ConnectionManager | DocsConnectionManager:
    if group not in _managers:
        if group.startswith("python"):
            _managers[group] = DocsConnectionManager()
        else:
            _managers[group] = ConnectionManager(slow_consumer=policy_of(group))
    return _managers[group]


def policy_of(group: str) -> str:
    if group.startswith("drop"):
        return "drop"
    if group.startswith(("close", "slow-close")):
        return "close"
    return "wait"


def member_count(manager: ConnectionManager | DocsConnectionManager) -> int:
    if isinstance(manager, DocsConnectionManager):
        return len(manager.active_connections)
    return len(manager)


def state_of(group: str) -> dict:
    manager = manager_for(group)
    if isinstance(manager, DocsConnectionManager):
        return {"len": member_count(manager)}
    rooms = manager.rooms()
    return {
        "len": len(manager),
        "rooms": rooms,
        "members": {room: manager.members(room) for room in rooms},
        "stats": manager.stats(),
        "active": sorted(ws.id for ws in manager.active_connections),
    }


@app.get("/state/{group}")
async def state(group: str):
    return state_of(group)


@app.get("/wait/{group}")
async def wait_for_members(group: str, members: int):
    """The state once the manager holds ``members`` sockets (the registry has no event to
    await, so this polls), or with ``timed_out`` after ``WAIT_SECONDS``."""
    manager = manager_for(group)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while member_count(manager) != members:
        if loop.time() >= deadline:
            return {**state_of(group), "timed_out": True}
        await asyncio.sleep(WAIT_STEP_SECONDS)
    return state_of(group)


@app.websocket("/sub/{group}")
async def subscriber(websocket: WebSocket, group: str):
    manager = manager_for(group)
    await manager.connect(websocket)
    await websocket.send_text(f"joined {websocket.id}")
    try:
        while True:
            if await websocket.receive_text() == "latency":
                await websocket.send_text(json.dumps({"latency": websocket.latency}))
    except WebSocketDisconnect as error:
        record_outcome(
            f"{group}:{websocket.id}",
            **describe_exception(error),
            still_member=websocket in manager if isinstance(manager, ConnectionManager) else None,
        )
        if isinstance(manager, DocsConnectionManager):
            manager.disconnect(websocket)


@app.websocket("/pub/{group}")
async def publish(websocket: WebSocket, group: str):
    """Commands, one JSON object per message:

    - ``{"op": "broadcast", "text": t}``: ``manager.broadcast(t)``, no answer;
    - ``{"op": "burst", "start": s, "count": c, "size": n}``: broadcasts ``c`` messages, each
      its sequence number (``s``, ``s + 1``, ...) as 8 digits padded with ``.`` to ``n``
      characters, then answers ``sent <s + c>``.
    """
    manager = manager_for(group)
    await websocket.accept()
    async for command in websocket.iter_json():
        if command["op"] == "broadcast":
            await manager.broadcast(command["text"])
        elif command["op"] == "burst":
            start, count, size = command["start"], command["count"], command["size"]
            for sequence in range(start, start + count):
                await manager.broadcast(f"{sequence:08d}".ljust(size, "."))
            await websocket.send_text(f"sent {start + count}")


@app.websocket("/room/{group}/{room}/{name}")
async def room_member(websocket: WebSocket, group: str, room: str, name: str):
    """Joins ``room`` and answers ``{"id": ...}``; then commands, one JSON object each:

    - ``{"op": "say", "text": t, "room": r?, "exclude_self": bool?}``: broadcasts
      ``"<name>: t"`` to ``r`` (default: its own room), without itself if asked;
    - ``{"op": "all", "text": t}``: broadcasts ``t`` to every member of every room;
    - ``{"op": "json", "data": d}`` / ``{"op": "bytes", "hex": h}``: ``broadcast_json`` /
      ``broadcast_bytes`` to its room;
    - ``{"op": "to", "id": i, "text": t}``: ``send_to(i, t)``, answers ``{"sent": bool}``;
    - ``{"op": "join"|"leave", "room": r}``, ``{"op": "disconnect"}``: answers ``{"ok": op}``.

    Answers go through ``send_personal_message``: to a member, in the manager's order
    (after every broadcast asked before them).
    """
    manager = manager_for(group)
    await manager.connect(websocket, room=room)
    await manager.send_personal_message(json.dumps({"id": websocket.id}), websocket)
    try:
        async for command in websocket.iter_json():
            op = command["op"]
            if op == "say":
                exclude = websocket if command.get("exclude_self") else None
                target = command.get("room", room)
                await manager.broadcast(f"{name}: {command['text']}", room=target, exclude=exclude)
            elif op == "all":
                await manager.broadcast(command["text"])
            elif op == "json":
                await manager.broadcast_json(command["data"], room=room)
            elif op == "bytes":
                await manager.broadcast_bytes(bytes.fromhex(command["hex"]), room=room)
            elif op == "to":
                sent = await manager.send_to(command["id"], command["text"])
                await manager.send_personal_message(json.dumps({"sent": sent}), websocket)
            else:
                if op == "join":
                    manager.join(websocket, command["room"])
                elif op == "leave":
                    manager.leave(websocket, command["room"])
                elif op == "disconnect":
                    manager.disconnect(websocket)
                await manager.send_personal_message(json.dumps({"ok": op}), websocket)
    finally:
        # iter_json ends quietly on disconnect: record what the manager says right then.
        record_outcome(
            f"{group}:{name}",
            close_code=websocket._connection.close_code,
            still_member=websocket in manager,
            members=len(manager),
            rooms=manager.rooms(),
        )


@app.websocket("/stream/{group}")
async def stream(websocket: WebSocket, group: str, pause: float = 0.002):
    """Broadcasts ``0``, ``1``, ... every ``pause`` seconds until it receives ``stop``, then
    answers ``{"sent": n, ...}`` with what the broadcasting loop raised, if anything."""
    manager = manager_for(group)
    await websocket.accept()
    stop = asyncio.ensure_future(websocket.receive_text())
    sent = 0
    error = None
    try:
        while not stop.done():
            await manager.broadcast(str(sent))
            sent += 1
            await asyncio.sleep(pause)
    except Exception as raised:
        error = raised
    finally:
        stop.cancel()
    await websocket.send_text(
        json.dumps({"sent": sent, "members": len(manager), **describe_exception(error)})
    )
