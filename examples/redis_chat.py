"""A chat with rooms that runs on any number of processes and hosts.

Run two servers against one Redis and open both in a browser:

    ferrosock run examples.redis_chat:app --port 8000 --broadcast-backend redis://127.0.0.1:6379/0
    ferrosock run examples.redis_chat:app --port 8001 --broadcast-backend redis://127.0.0.1:6379/0

The code does not mention Redis: the flag (or ``FERROSOCK_BROADCAST_BACKEND``) makes the
manager's broadcasts, ``send_to`` and ``cluster_*`` reach every process.

Clients send JSON: ``{"say": "..."}`` to their room, ``{"to": <id>, "say": "..."}`` to one
person wherever they are connected, ``{"who": true}`` for the room's members on every process.
"""

import json

from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect
from ferrosock.responses import HTMLResponse

app = App()
manager = ConnectionManager()

html = """<!DOCTYPE html>
<html>
    <head><title>Chat</title></head>
    <body>
        <h1>Room <span id="room"></span>, you are #<span id="me"></span></h1>
        <form onsubmit="say(event)">
            <input id="text" autocomplete="off"/><button>Send</button>
        </form>
        <ul id="messages"></ul>
        <script>
            const room = location.hash.slice(1) || "lobby";
            document.getElementById("room").textContent = room;
            const ws = new WebSocket(`ws://${location.host}/ws/${room}/guest`);
            ws.onmessage = (event) => {
                const message = JSON.parse(event.data);
                if (message.welcome) document.getElementById("me").textContent = message.id;
                const item = document.createElement("li");
                item.textContent = event.data;
                document.getElementById("messages").appendChild(item);
            };
            function say(event) {
                const input = document.getElementById("text");
                ws.send(JSON.stringify({say: input.value}));
                input.value = "";
                event.preventDefault();
            }
        </script>
    </body>
</html>
"""


@app.get("/")
async def get():
    return HTMLResponse(html)


@manager.on_backend_reconnect
async def resync():
    # Messages published while Redis was away are lost: tell everyone here to refresh.
    await manager.broadcast_json({"resync": True})


@app.websocket("/ws/{room}/{name}")
async def chat(websocket: WebSocket, room: str, name: str):
    await manager.connect(websocket, room)
    me = websocket.id
    await websocket.send_json({"welcome": name, "id": me})
    await manager.broadcast_json({"joined": name, "id": me, "room": room}, exclude=websocket)
    try:
        while True:
            message = await websocket.receive_json()
            if "to" in message:
                line = {"from": name, "id": me, "private": message["say"]}
                found = await manager.send_to(int(message["to"]), json.dumps(line))
                await websocket.send_json({"sent": found, "to": message["to"]})
            elif "who" in message:
                members = await manager.cluster_members(room)
                await websocket.send_json({"room": room, "members": members})
            else:
                line = {"from": name, "id": me, "room": room, "say": message["say"]}
                await manager.broadcast_json(line, room=room, exclude=websocket)
                await websocket.send_json({"you": message["say"]})
    except WebSocketDisconnect:
        await manager.broadcast_json({"left": name, "id": me, "room": room})
