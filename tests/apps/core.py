"""The app behind tests/test_core_*.py, run by a real server in a subprocess.

Handlers whose outcome cannot be seen from the client (what a handler caught after its
peer left, what a misuse raised) record it under a key taken from the path; the test
then asks ``GET /outcome/{key}``, which waits for the record instead of polling.
"""

import asyncio
import uuid

from ferrosock import App, WebSocket, WebSocketDisconnect, _engine
from ferrosock.exceptions import WebSocketException

app = App()

OUTCOME_WAIT_SECONDS = 10.0
SUPPORTED_SUBPROTOCOLS = ("chat.v2", "chat.v1")

_outcomes: dict[str, dict] = {}
_outcome_events: dict[str, asyncio.Event] = {}


def _outcome_event(key: str) -> asyncio.Event:
    return _outcome_events.setdefault(key, asyncio.Event())


def record_outcome(key: str, **outcome) -> None:
    _outcomes[key] = outcome
    _outcome_event(key).set()


def describe_exception(error: BaseException | None) -> dict:
    if error is None:
        return {"exception": None, "kinds": []}
    return {
        "exception": type(error).__name__,
        "kinds": [kind.__name__ for kind in type(error).__mro__],
        "message": str(error),
        "code": getattr(error, "code", None),
        "reason": getattr(error, "reason", None),
    }


@app.get("/outcome/{key}")
async def outcome(key: str):
    try:
        await asyncio.wait_for(_outcome_event(key).wait(), OUTCOME_WAIT_SECONDS)
    except TimeoutError:
        return {"timed_out": True}
    return _outcomes[key]


@app.get("/stats")
async def stats():
    return _engine.stats()


@app.get("/items/{item_id}")
async def read_item(item_id: int):
    return {"item_id": item_id}


@app.websocket("/echo")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@app.websocket("/json")
async def echo_json(websocket: WebSocket):
    await websocket.accept()
    while True:
        try:
            data = await websocket.receive_json()
        except WebSocketDisconnect:
            return
        await websocket.send_json(data)


@app.websocket("/json-binary")
async def echo_json_binary(websocket: WebSocket):
    await websocket.accept()
    data = await websocket.receive_json(mode="binary")
    await websocket.send_json(data, mode="binary")
    await websocket.close()


@app.websocket("/subprotocol")
async def subprotocol(websocket: WebSocket):
    offered = list(websocket.scope["subprotocols"])
    chosen = next((name for name in offered if name in SUPPORTED_SUBPROTOCOLS), None)
    await websocket.accept(subprotocol=chosen, headers=[(b"x-ferrosock-test", b"accepted")])
    await websocket.send_json(
        {
            "offered": offered,
            "chosen": chosen,
            "header": websocket.headers.get("sec-websocket-protocol"),
        }
    )
    await websocket.close()


@app.websocket("/typed/{number}/{ratio}/{ident}/{name}")
async def typed_path(websocket: WebSocket, number: int, ratio: float, ident: uuid.UUID, name: str):
    await websocket.accept()
    await websocket.send_json(
        {
            "number": [type(number).__name__, number],
            "ratio": [type(ratio).__name__, ratio],
            "ident": [type(ident).__name__, str(ident)],
            "name": [type(name).__name__, name],
        }
    )
    await websocket.close()


@app.websocket("/query")
async def query(websocket: WebSocket, name: str = "anon", count: int = 1):
    await websocket.accept()
    await websocket.send_json({"name": name, "count": count})
    await websocket.close()


@app.websocket("/close-before-accept")
async def close_before_accept(websocket: WebSocket):
    await websocket.close()


@app.websocket("/exception-before-accept")
async def exception_before_accept(websocket: WebSocket):
    raise WebSocketException(code=1008, reason="not allowed")


@app.websocket("/accept-and-close")
async def accept_and_close(websocket: WebSocket):
    await websocket.accept()
    await websocket.close()


@app.websocket("/raise-after-message")
async def raise_after_message(websocket: WebSocket):
    await websocket.accept()
    await websocket.receive_text()
    raise ValueError("boom from the handler")


@app.websocket("/return-without-close")
async def return_without_close(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("bye")


@app.websocket("/record-disconnect/{key}")
async def record_disconnect(websocket: WebSocket, key: str):
    await websocket.accept()
    try:
        while True:
            await websocket.receive_text()
    except Exception as error:
        record_outcome(key, **describe_exception(error))


@app.websocket("/send-after-disconnect/{key}")
async def send_after_disconnect(websocket: WebSocket, key: str):
    await websocket.accept()
    try:
        await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    try:
        await asyncio.wait_for(websocket.send_text("too late"), OUTCOME_WAIT_SECONDS)
    except Exception as error:
        record_outcome(key, **describe_exception(error))
    else:
        record_outcome(key, **describe_exception(None))


@app.websocket("/send-until-error/{key}")
async def send_until_error(websocket: WebSocket, key: str):
    await websocket.accept()
    payload = "x" * 1024

    async def send_forever():
        while True:
            await websocket.send_text(payload)

    try:
        await asyncio.wait_for(send_forever(), OUTCOME_WAIT_SECONDS)
    except Exception as error:
        record_outcome(key, **describe_exception(error))


@app.websocket("/send-many/{key}")
async def send_many(websocket: WebSocket, key: str, count: int, size: int):
    """Sends ``count`` messages of ``size`` characters (each starting with its number) and
    records whether every send returned; then waits for the peer to close."""
    await websocket.accept()
    try:
        for number in range(count):
            await websocket.send_text(f"{number:08d}".ljust(size, "."))
    except Exception as error:
        record_outcome(key, **describe_exception(error))
        return
    record_outcome(key, **describe_exception(None))
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass


@app.websocket("/linger")
async def linger(websocket: WebSocket, stubborn: bool = False):
    """Keeps running long after its socket ended: only cancelling stops it, or (stubborn)
    not even that."""
    await websocket.accept()
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not stubborn:
                    raise


@app.websocket("/receive-before-accept/{key}")
async def receive_before_accept(websocket: WebSocket, key: str):
    try:
        await asyncio.wait_for(websocket.receive_text(), OUTCOME_WAIT_SECONDS)
    except Exception as error:
        record_outcome(key, **describe_exception(error))
    else:
        record_outcome(key, **describe_exception(None))
    await websocket.close()  # refuse the handshake


@app.websocket("/send-after-own-close/{key}")
async def send_after_own_close(websocket: WebSocket, key: str):
    await websocket.accept()
    await websocket.close()
    try:
        await asyncio.wait_for(websocket.send_text("too late"), OUTCOME_WAIT_SECONDS)
    except Exception as error:
        record_outcome(key, **describe_exception(error))
    else:
        record_outcome(key, **describe_exception(None))
