"""Apps for the deployment flags: ``--factory`` (``create_app``) and ``--env-file``
(``GREETING`` is read when the module is imported)."""

import os

from ferrosock import App, Request, WebSocket
from ferrosock.responses import PlainTextResponse

GREETING = os.environ.get("GREETING", "unset")

app = App()


@app.websocket("/greeting")
async def greeting(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text(GREETING)
    await websocket.close()


def create_app() -> App:
    made = App()

    @made.websocket("/made")
    async def made_by_factory(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("made by the factory")
        await websocket.close()

    return made


@app.websocket("/cookies")
async def websocket_cookies(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_json(
        {"cookies": websocket.cookies, "path": websocket["path"], "type": websocket["type"]}
    )
    await websocket.close()


@app.get("/cookies")
async def request_cookies(request: Request):
    return {"cookies": request.cookies, "path": request["path"], "type": request["type"]}


@app.get("/own-server-header")
async def own_server_header():
    return PlainTextResponse("mine", headers={"server": "the app's own"})
