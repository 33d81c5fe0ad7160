"""Echo server.

``/ws`` answers every message in kind: text with text, bytes with bytes.
``/echo`` is text only.

Run: ``ferrosock run examples.echo:app --port 8000``
"""

from ferrosock import App, WebSocket, WebSocketDisconnect

app = App()


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass  # the peer left while its answer was being sent


@app.websocket("/echo")
async def echo_text(websocket: WebSocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)
