"""A publisher that broadcasts as fast as Python can, to members that never read."""

from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect

BACKLOG_LIMIT = 64 * 1024

app = App()
manager = ConnectionManager(slow_consumer="drop", backlog_limit=BACKLOG_LIMIT)


@app.websocket("/member")
async def member(websocket: WebSocket):
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass


@app.get("/members")
async def members():
    return {"members": len(manager)}


@app.get("/flood")
async def flood(count: int, size: int):
    message = "x" * size
    peak = 0
    for _ in range(count):
        await manager.broadcast(message)
        peak = max(peak, manager.stats()["backlog"])
    return {"peak_backlog": peak, "limit": BACKLOG_LIMIT}
