"""``ConnectionManager``: the FastAPI docs' class, with fan-out done by the engine.

Same methods as the docs' class (``connect``, ``disconnect``, ``send_personal_message``,
``broadcast``), plus rooms, ``send_to`` and counters. A broadcast hands one message to the
engine and returns; the engine offers it to every member's outbox on its IO threads, so a
slow or dead client never delays the others. Everything one manager sends is delivered in
the order it was asked. Sockets that end leave the manager by themselves.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Literal

from . import _engine
from .websockets import WebSocket, _json_text


class ConnectionManager:
    def __init__(
        self,
        *,
        slow_consumer: Literal["close", "drop"] = "close",
        backlog_limit: int = 8 << 20,
    ) -> None:
        """``slow_consumer``: what a broadcast does to a member whose outbox is full —
        ``"close"`` it with 1013 (the client can reconnect and resync) or ``"drop"`` the
        message for that member (counted in ``stats()["dropped"]``).

        ``backlog_limit``: bytes handed over for fan-out but not yet offered to members.
        A publisher that gets this far ahead of the fan-out waits in ``broadcast`` until
        it is half caught up, so a fast publisher cannot grow the server's memory."""
        self._registry = _engine.Registry(slow_consumer=slow_consumer)
        self._backlog_limit = backlog_limit
        self._sockets: weakref.WeakValueDictionary[int, WebSocket] = weakref.WeakValueDictionary()

    # ---- the docs' methods ----

    async def connect(self, websocket: WebSocket, room: str | None = None) -> None:
        """Accept the handshake and register the socket (in ``room`` if given)."""
        await websocket.accept()
        self.add(websocket, room)

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget the socket; calling it again, or for a socket that already ended, is fine."""
        self._registry.remove(websocket._connection)
        self._sockets.pop(websocket.id, None)

    async def send_personal_message(self, message: str | bytes, websocket: WebSocket) -> None:
        if websocket._connection in self._registry:
            self._send_to(websocket.id, message)
            await self._keep_up()
        elif isinstance(message, str):
            await websocket.send_text(message)
        else:
            await websocket.send_bytes(message)

    async def broadcast(
        self, message: str, room: str | None = None, exclude: WebSocket | None = None
    ) -> None:
        """Send ``message`` to every member (of ``room``), except ``exclude``."""
        self._registry.broadcast_text(message, room, _connection_of(exclude))
        await self._keep_up()

    # ---- more ----

    def add(self, websocket: WebSocket, room: str | None = None) -> None:
        """Register an already accepted socket."""
        if room is None:
            self._registry.add(websocket._connection)
        else:
            self._registry.join(websocket._connection, room)
        self._sockets[websocket.id] = websocket

    async def broadcast_json(
        self, data: Any, room: str | None = None, exclude: WebSocket | None = None
    ) -> None:
        self._registry.broadcast_text(_json_text(data), room, _connection_of(exclude))
        await self._keep_up()

    async def broadcast_bytes(
        self, data: bytes, room: str | None = None, exclude: WebSocket | None = None
    ) -> None:
        self._registry.broadcast_bytes(data, room, _connection_of(exclude))
        await self._keep_up()

    async def send_to(self, connection_id: int, message: str | bytes) -> bool:
        """Send to the member with this id; False when no such member is here."""
        sent = self._send_to(connection_id, message)
        await self._keep_up()
        return sent

    async def _keep_up(self) -> None:
        """Backpressure on publishers: past the backlog limit, wait (polling, 1 ms) until
        the fan-out has caught up to half of it. The usual case is one integer read."""
        if self._registry.backlog() <= self._backlog_limit:
            return
        while self._registry.backlog() > self._backlog_limit // 2:
            await asyncio.sleep(0.001)

    def _send_to(self, connection_id: int, message: str | bytes) -> bool:
        if isinstance(message, str):
            return self._registry.send_text_to(connection_id, message)
        return self._registry.send_bytes_to(connection_id, message)

    def join(self, websocket: WebSocket, room: str) -> None:
        self._registry.join(websocket._connection, room)
        self._sockets[websocket.id] = websocket

    def leave(self, websocket: WebSocket, room: str) -> None:
        self._registry.leave(websocket._connection, room)

    def rooms(self) -> list[str]:
        return self._registry.rooms()

    def members(self, room: str) -> list[int]:
        """The connection ids in ``room``."""
        return self._registry.members(room)

    @property
    def active_connections(self) -> list[WebSocket]:
        """The registered sockets still open, as in the docs' class."""
        return [ws for ws in list(self._sockets.values()) if ws._connection in self._registry]

    def stats(self) -> dict[str, int]:
        """``members``, ``broadcasts``, ``delivered``, ``dropped``, ``closed_slow`` and
        ``backlog`` (bytes waiting for the fan-out)."""
        return self._registry.stats()

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, websocket: WebSocket) -> bool:
        return websocket._connection in self._registry


def _connection_of(websocket: WebSocket | None) -> _engine.Connection | None:
    return None if websocket is None else websocket._connection
