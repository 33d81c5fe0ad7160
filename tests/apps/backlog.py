"""A publisher that broadcasts as fast as Python can, to members that never read."""

import asyncio

from ferrosock import App, ConnectionManager, WebSocket, WebSocketDisconnect

BACKLOG_LIMIT = 64 * 1024

app = App()
manager = ConnectionManager(slow_consumer="drop", backlog_limit=BACKLOG_LIMIT)
joined = asyncio.Condition()


@app.websocket("/member")
async def member(websocket: WebSocket):
    await manager.connect(websocket)
    async with joined:
        joined.notify_all()
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass


@app.get("/members")
async def members(at_least: int):
    """The member count once at least ``at_least`` sockets have joined (10 s at most)."""
    async with joined:
        await asyncio.wait_for(joined.wait_for(lambda: len(manager) >= at_least), 10)
    return {"members": len(manager)}


@app.get("/flood")
async def flood(count: int, size: int):
    message = "x" * size
    peak = 0
    for _ in range(count):
        await manager.broadcast(message)
        peak = max(peak, manager.stats()["backlog"])
    return {"peak_backlog": peak, "limit": BACKLOG_LIMIT}
