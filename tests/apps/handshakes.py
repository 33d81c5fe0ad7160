"""The app behind tests/test_core_handshake_answers.py and the metrics of refused
handshakes: handlers that answer the handshake with something other than an upgrade, and
``/accept``, which upgrades and echoes, run by a real server in a subprocess."""

from ferrosock import App, WebSocket
from ferrosock.exceptions import WebSocketException
from ferrosock.responses import PlainTextResponse

app = App()


@app.websocket("/crash-before-accept")
async def crash_before_accept(websocket: WebSocket):
    raise LookupError("no such tenant")


@app.websocket("/close-before-accept")
async def close_before_accept(websocket: WebSocket):
    await websocket.close(code=4002, reason="go away")


@app.websocket("/refuse-with-exception")
async def refuse_with_exception(websocket: WebSocket):
    raise WebSocketException(code=4001, reason="no token")


@app.websocket("/denied")
async def denied(websocket: WebSocket):
    response = PlainTextResponse("come back later", status_code=429, headers={"retry-after": "7"})
    await websocket.send_denial_response(response)


@app.websocket("/accept")
async def accept(websocket: WebSocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)
