"""What a client over TLS sees: an echo of both kinds, and where the app thinks it is."""

from ferrosock import App, Request, WebSocket, WebSocketDisconnect

app = App()


@app.websocket("/echo")
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
        pass


@app.websocket("/where")
async def where_websocket(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_json({"scheme": websocket.scope["scheme"], "url": str(websocket.url)})
    await websocket.close()


@app.get("/where")
async def where_http(request: Request):
    return {"scheme": request.scope["scheme"], "url": str(request.url)}
