"""``WebSocket``: Starlette's WebSocket API over ferrosock's engine.

Every receive and send goes straight to the engine's ``Connection``, which returns an
awaitable written in Rust: when a message is already waiting (or the outbox has room) the
``await`` finishes on its first step, with no Future and no event-loop round trip.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from . import _engine
from .exceptions import WebSocketDisconnect
from .outcomes import Refusal, report_refusal
from .proxies import NO_FORWARDING, Forwarding
from .requests import HTTPConnection

if TYPE_CHECKING:
    from .responses import Response

logger = logging.getLogger("ferrosock.error")


class WebSocketState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2
    RESPONSE = 3


# The engine reports states as their values; indexing this is cheaper than the enum's call.
_STATES = tuple(WebSocketState)


def _json_text(data: Any) -> str:
    # FastAPI's (Starlette's) encoding: compact, non-ASCII kept as is.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _check_mode(mode: str) -> None:
    if mode not in ("text", "binary"):
        raise RuntimeError('The "mode" argument should be "text" or "binary".')


_CONNECTING = WebSocketState.CONNECTING.value


class WebSocket(HTTPConnection):
    """One WebSocket connection, as a handler sees it; like Starlette's, also a read-only
    mapping over its ``scope`` (``websocket["path"]``)."""

    scope_type = "websocket"

    def __init__(
        self,
        connection: _engine.Connection,
        app: Any = None,
        forwarding: Forwarding = NO_FORWARDING,
    ) -> None:
        super().__init__(connection, app, forwarding)
        self._connection = connection
        self._connect_received = False
        self.refusal: Refusal | None = None
        if type(self) is WebSocket:
            # The per-message calls go straight to the engine: no Python frame in between.
            # (A subclass keeps the methods below, so that its overrides still apply.)
            self.receive_text = connection.receive_text  # type: ignore[method-assign]
            self.receive_bytes = connection.receive_bytes  # type: ignore[method-assign]
            self.send_text = connection.send_text  # type: ignore[method-assign]
            self.send_bytes = connection.send_bytes  # type: ignore[method-assign]

    # ---- the handshake request ----

    @property
    def id(self) -> int:
        """The engine's id of this connection, unique across the cluster (``docs/scaling.md``)."""
        return self._connection.id

    def _scope_extras(self) -> dict[str, Any]:
        return {"subprotocols": self._connection.subprotocols}

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered."""
        return self._connection.subprotocols

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen in ``accept``."""
        return self._connection.subprotocol

    @property
    def latency(self) -> float | None:
        """The last ping round-trip in seconds (None until a pong came back)."""
        return self._connection.latency

    @property
    def client_state(self) -> WebSocketState:
        return _STATES[self._connection.client_state]

    @property
    def application_state(self) -> WebSocketState:
        return _STATES[self._connection.application_state]

    # ---- the conversation ----

    def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes | str, bytes | str]] | None = None,
    ) -> Awaitable[None]:
        extra = None
        if headers is not None:
            extra = [(_text(name), _text(value)) for name, value in headers]
        accepted = self._connection.accept(subprotocol, extra)
        self._connect_received = True  # receive() goes straight to the engine from now on
        if logger.isEnabledFor(logging.INFO):
            client, path = self._origin.client_text, self._origin.path
            logger.info('%s - "WebSocket %s" [accepted]', client, path)
        return accepted

    def receive(self) -> Awaitable[dict[str, Any]]:
        """The next ASGI-style message. Before ``accept`` the first is
        ``{"type": "websocket.connect"}``, as in Starlette."""
        if not self._connect_received and self._connection.application_state == _CONNECTING:
            self._connect_received = True
            return _ready({"type": "websocket.connect"})
        return self._connection.receive()

    def receive_text(self) -> Awaitable[str]:
        return self._connection.receive_text()

    def receive_bytes(self) -> Awaitable[bytes]:
        return self._connection.receive_bytes()

    async def receive_json(self, mode: str = "text") -> Any:
        _check_mode(mode)
        if mode == "text":
            return json.loads(await self._connection.receive_text())
        return json.loads((await self._connection.receive_bytes()).decode("utf-8"))

    async def iter_text(self) -> AsyncIterator[str]:
        try:
            while True:
                yield await self._connection.receive_text()
        except WebSocketDisconnect:
            pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield await self._connection.receive_bytes()
        except WebSocketDisconnect:
            pass

    async def iter_json(self) -> AsyncIterator[Any]:
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            pass

    def send_text(self, data: str) -> Awaitable[None]:
        """Queue a text message. Past the server's ``outbox_limit`` the ``await`` waits
        for the client to take it below half; if the client takes nothing for
        ``slow_consumer_timeout`` the socket is closed with 1013 and this raises
        ``WebSocketDisconnect``, as does any send once the socket has ended. The same
        holds for ``send_bytes`` and ``send_json``."""
        return self._connection.send_text(data)

    def send_bytes(self, data: bytes) -> Awaitable[None]:
        return self._connection.send_bytes(data)

    def send_json(self, data: Any, mode: str = "text") -> Awaitable[None]:
        _check_mode(mode)
        text = _json_text(data)
        if mode == "text":
            return self._connection.send_text(text)
        return self._connection.send_bytes(text.encode("utf-8"))

    async def send(self, message: dict[str, Any]) -> None:
        """The ASGI-style send, for code written against Starlette's low-level API."""
        kind = message.get("type")
        if kind == "websocket.accept":
            await self.accept(message.get("subprotocol"), message.get("headers"))
        elif kind == "websocket.send":
            if message.get("text") is not None:
                await self.send_text(message["text"])
            elif message.get("bytes") is not None:
                await self.send_bytes(message["bytes"])
            else:
                raise RuntimeError(
                    'a "websocket.send" message needs a "text" or a "bytes" value, got neither'
                )
        elif kind == "websocket.close":
            await self.close(message.get("code", 1000), message.get("reason"))
        else:
            raise RuntimeError(
                'Expected ASGI message "websocket.accept", "websocket.send" or '
                f'"websocket.close", but got {kind!r}'
            )

    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]:
        """Close with ``code``; before ``accept`` this refuses the handshake (HTTP 403, the
        code and reason are logged). A second close raises ``RuntimeError``."""
        if self._connection.application_state == _CONNECTING:
            self._refuse(Refusal(403, code, reason or ""))
        return self._connection.close(code, reason)

    async def send_denial_response(self, response: Response) -> None:
        """Answer the handshake with ``response`` (status, headers, body) instead of the
        upgrade; only before ``accept``."""
        if self._connection.application_state != _CONNECTING:
            raise RuntimeError(
                "send_denial_response must be called before accept() and before close()"
            )
        self._refuse(Refusal(response.status_code))
        self._connection.reject(response.status_code, response.raw_headers, response.body)

    def _refuse(self, refusal: Refusal) -> None:
        self.refusal = refusal
        report_refusal(self, refusal)

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self._connection.path}>"


async def close_unless_closed(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    """Close (or, before ``accept``, refuse) unless the app already did."""
    if websocket.application_state in (WebSocketState.CONNECTING, WebSocketState.CONNECTED):
        await websocket.close(code, reason)


async def _ready(message: dict[str, Any]) -> dict[str, Any]:
    return message


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
