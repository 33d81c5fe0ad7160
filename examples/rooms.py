"""Chat rooms with the native ``ConnectionManager``.

A client joins a room by its path, ``/ws/{room}/{name}``; what it says reaches only the
members of that room. The socket leaves the manager (and its room) by itself when it ends.
``/`` serves a small page to try it in a browser.

Run: ``ferrosock run examples.rooms:app --port 8000``
"""

from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect
from ferrosock.responses import HTMLResponse

app = App()
manager = ConnectionManager()

html = """
<!DOCTYPE html>
<html>
    <head>
        <title>Rooms</title>
    </head>
    <body>
        <h1>WebSocket Rooms</h1>
        <form id="join" onsubmit="join(event)">
            <input type="text" id="room" placeholder="room" value="lobby" autocomplete="off"/>
            <input type="text" id="name" placeholder="name" autocomplete="off"/>
            <button>Join</button>
        </form>
        <form action="" onsubmit="sendMessage(event)">
            <input type="text" id="messageText" autocomplete="off"/>
            <button>Send</button>
        </form>
        <ul id='messages'>
        </ul>
        <script>
            var ws = null;
            function join(event) {
                event.preventDefault()
                if (ws) { ws.close() }
                var room = encodeURIComponent(document.getElementById("room").value)
                var name = encodeURIComponent(document.getElementById("name").value || "guest")
                ws = new WebSocket(`ws://${location.host}/ws/${room}/${name}`);
                ws.onmessage = function(event) {
                    var message = document.createElement('li')
                    message.appendChild(document.createTextNode(event.data))
                    document.getElementById('messages').appendChild(message)
                };
            }
            function sendMessage(event) {
                event.preventDefault()
                var input = document.getElementById("messageText")
                if (ws) { ws.send(input.value) }
                input.value = ''
            }
        </script>
    </body>
</html>
"""


@app.get("/")
async def get():
    return HTMLResponse(html)


@app.websocket("/ws/{room}/{name}")
async def websocket_endpoint(websocket: WebSocket, room: str, name: str):
    await manager.connect(websocket, room=room)
    await manager.broadcast(f"{name} joined {room}", room=room)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"{name}: {data}", room=room)
    except WebSocketDisconnect:
        # The socket leaves the manager by itself; tell the others in its room.
        await manager.broadcast(f"{name} left {room}", room=room)
