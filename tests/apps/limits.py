"""The app behind tests/test_limits_rates.py, test_fuzz_frames.py and test_soak.py.

``/echo`` answers every message; ``/limited`` sets its own message rate; ``/sink``
answers nothing and lets a test wait until it has taken a given text; ``/state``
reports the engine's counters and how many handlers are running, so a test can see the
server come back to rest after load.
"""

import asyncio

from ferrosock import App, WebSocket, WebSocketDisconnect

app = App()

LIMITED_ROUTE_MESSAGES_PER_SECOND = 5

SEEN_WAIT_SECONDS = 10.0

_running_handlers = 0
_seen: dict[str, asyncio.Event] = {}


def _seen_event(text: str) -> asyncio.Event:
    return _seen.setdefault(text, asyncio.Event())


async def _echo(websocket: WebSocket) -> None:
    global _running_handlers
    _running_handlers += 1
    try:
        await websocket.accept()
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
    finally:
        _running_handlers -= 1


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await _echo(websocket)


@app.websocket("/limited", max_messages_per_second=LIMITED_ROUTE_MESSAGES_PER_SECOND)
async def limited(websocket: WebSocket) -> None:
    await _echo(websocket)


@app.websocket("/sink")
async def sink(websocket: WebSocket) -> None:
    """Takes text messages without answering, and remembers each (``GET /seen/{text}``)."""
    await websocket.accept()
    try:
        while True:
            _seen_event(await websocket.receive_text()).set()
    except WebSocketDisconnect:
        pass


@app.get("/seen/{text}")
async def seen(text: str) -> dict:
    try:
        await asyncio.wait_for(_seen_event(text).wait(), SEEN_WAIT_SECONDS)
    except TimeoutError:
        return {"seen": False}
    return {"seen": True}


@app.get("/state")
async def state() -> dict:
    metrics = app.metrics()
    return {
        "open_connections": metrics["open_connections"],
        "running_handlers": _running_handlers,
        "metrics": metrics,
    }
