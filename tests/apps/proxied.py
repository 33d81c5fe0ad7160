"""An app that reports where each connection came from, for the proxy settings'
tests (``proxy_headers``, ``forwarded_allow_ips``, ``root_path``)."""

from ferrosock import App, Request, WebSocket
from ferrosock.responses import JSONResponse

app = App()


def _seen(connection: Request | WebSocket) -> dict:
    scope = connection.scope
    return {
        "client": list(connection.client),
        "url": str(connection.url),
        "scope_client": list(scope["client"]),
        "scope_scheme": scope["scheme"],
        "root_path": scope["root_path"],
        "path": scope["path"],
    }


@app.websocket("/ws")
async def where_from(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_json(_seen(websocket))
    await websocket.close()


@app.get("/http")
async def where_from_http(request: Request):
    return JSONResponse(_seen(request))
