"""The benchmark's two endpoints on ferrosock, twice: ``app`` keeps the FastAPI
documentation's Python-loop manager (only the imports changed), ``native_app`` uses
ferrosock's own ``ConnectionManager``, whose broadcast fans out in Rust."""

from ferrosock import (
    App,
    WebSocket,
    WebSocketDisconnect,
)
from ferrosock import (
    ConnectionManager as NativeConnectionManager,
)


class ConnectionManager:
    """The documentation's manager, unchanged."""

    def __init__(self):
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket):
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket):
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str):
        for connection in self.active_connections:
            await connection.send_text(message)


def build(manager) -> App:
    app = App()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    @app.websocket("/chat")
    async def chat(websocket: WebSocket):
        await manager.connect(websocket)
        try:
            while True:
                data = await websocket.receive_text()
                await manager.broadcast(data)
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    return app


app = build(ConnectionManager())
native_app = build(NativeConnectionManager())
