"""The app behind tests/test_core_waits.py: handlers whose receives park and are woken by
the engine while other things happen around them: a context variable set per
connection, timeouts and cancellation around a parked receive, one handler closing
another's socket while that one waits, awaitables made before they are awaited."""

import asyncio
import contextvars

from ferrosock import App, WebSocket, WebSocketDisconnect

app = App()

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
parked: dict[str, WebSocket] = {}


@app.websocket("/context/{name}")
async def context(websocket: WebSocket, name: str):
    await websocket.accept()
    who.set(name)
    task = asyncio.current_task()
    async for text in websocket.iter_text():
        same_task = asyncio.current_task() is task
        await websocket.send_text(f"{who.get()} {same_task} {text}")


@app.websocket("/timeout")
async def timeout(websocket: WebSocket):
    await websocket.accept()
    try:
        await asyncio.wait_for(websocket.receive_text(), 0.2)
    except TimeoutError:
        await websocket.send_text("timed out")
    # The message that comes after the timeout is not lost.
    await websocket.send_text("then " + await websocket.receive_text())


@app.websocket("/cancelled")
async def cancelled(websocket: WebSocket):
    await websocket.accept()
    waiting = asyncio.ensure_future(websocket.receive_text())
    # One turn of the loop: the task scheduled above runs first and parks its receive.
    await asyncio.sleep(0)
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        await websocket.send_text("cancelled")
    await websocket.send_text("then " + await websocket.receive_text())


@app.websocket("/held")
async def held(websocket: WebSocket):
    await websocket.accept()
    # Two receives made before either is awaited are two operations, whatever the
    # engine reuses; a receive of another kind in between takes its own message.
    first = websocket.receive_text()
    second = websocket.receive_text()
    texts = [await first, (await websocket.receive_bytes()).decode(), await second]
    await websocket.send_json({"texts": texts, "distinct": first is not second})


@app.websocket("/parked/{name}")
async def park(websocket: WebSocket, name: str):
    await websocket.accept()
    parked[name] = websocket
    try:
        while True:
            text = await websocket.receive_text()
            if text.startswith("close "):
                other = parked[text.removeprefix("close ")]
                await other.close(4000, f"closed by {name}")
            await websocket.send_text(f"{name} {text}")
    except WebSocketDisconnect as disconnect:
        parked.pop(name, None)
        # Tell whoever is left how this one ended.
        for rest in list(parked.values()):
            await rest.send_text(f"{name} ended {disconnect.code}")
