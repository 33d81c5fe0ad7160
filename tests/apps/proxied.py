"""An app that reports where each connection came from, for the proxy settings'
tests (``proxy_headers``, ``forwarded_allow_ips``, ``root_path``)."""

from ferrosock import App, Request, WebSocket
from ferrosock.responses import JSONResponse

app = App()


def _seen(connection: Request | WebSocket) -> dict:
    scope = connection.scope
    client, scope_client = connection.client, scope["client"]
    return {
        "client": None if client is None else list(client),
        "url": str(connection.url),
        "scope_client": None if scope_client is None else list(scope_client),
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
