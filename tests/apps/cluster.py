"""An app for the scale-out tests: a native manager driven by JSON commands.

Run with ``--broadcast-backend redis://...``; the code itself never names a backend.
``/ws/{room}`` joins ``room`` ("-": no room) and sends ``{"id": ...}`` first; then each
command a client sends is answered or carried out:

- ``{"broadcast": text, "room": r?, "exclude_me": bool?}`` → ``manager.broadcast``
- ``{"bytes": text, "room": r?}`` → ``manager.broadcast_bytes`` of the UTF-8 bytes
- ``{"to": id, "text": t}`` → ``manager.send_to``; replies ``{"sent": bool}``
- ``{"personal": id, "text": t}`` → ``manager.send_personal_message(t, id)``
- ``{"count": r?}`` / ``{"members": r?}`` → ``cluster_count`` / ``cluster_members``
- ``{"burst": n, "size": s, "room": r?}`` → n broadcasts of s bytes, numbered
``/stats`` returns ``manager.stats()`` and the reconnect hook's calls.
"""

import json

from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect
from ferrosock.responses import JSONResponse

app = App()
manager = ConnectionManager()
reconnects_seen = 0


@manager.on_backend_reconnect
async def count_reconnect():
    global reconnects_seen
    reconnects_seen += 1
    await manager.broadcast("resync")


@app.get("/stats")
async def stats():
    return JSONResponse({**manager.stats(), "hook_calls": reconnects_seen, "local": len(manager)})


async def _reply(websocket: WebSocket, command: dict) -> None:
    room = command.get("room")
    if "broadcast" in command:
        exclude = websocket if command.get("exclude_me") else None
        await manager.broadcast(command["broadcast"], room=room, exclude=exclude)
    elif "bytes" in command:
        await manager.broadcast_bytes(command["bytes"].encode(), room=room)
    elif "to" in command:
        await websocket.send_json({"sent": await manager.send_to(command["to"], command["text"])})
    elif "personal" in command:
        await manager.send_personal_message(command["text"], command["personal"])
    elif "count" in command:
        await websocket.send_json({"count": await manager.cluster_count(command["count"])})
    elif "members" in command:
        await websocket.send_json({"members": await manager.cluster_members(command["members"])})
    elif "burst" in command:
        for i in range(command["burst"]):
            await manager.broadcast(f"{i:06d}".ljust(command.get("size", 6), "."), room=room)
        await websocket.send_json({"burst_done": command["burst"]})


@app.websocket("/ws/{room}")
async def member(websocket: WebSocket, room: str):
    await manager.connect(websocket, None if room == "-" else room)
    await websocket.send_json({"id": websocket.id})
    try:
        while True:
            command = json.loads(await websocket.receive_text())
            try:
                await _reply(websocket, command)
            except (TimeoutError, ConnectionError) as error:
                await websocket.send_json({"error": type(error).__name__, "why": str(error)})
    except WebSocketDisconnect:
        pass
