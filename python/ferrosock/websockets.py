"""``WebSocket``: Starlette's WebSocket API over ferrosock's engine.

``WebSocket`` is a subclass of the engine's ``Connection``, which the engine makes for each
upgraded socket. ``receive_text``, ``receive_bytes``, ``send_text`` and ``send_bytes`` are
``Connection``'s own methods, written in Rust: a handler's call goes straight there, and
returns an awaitable that, when a message is already waiting (or the outbox has room),
finishes on its first step, with no Future and no event-loop round trip.
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


class _Handshake:
    """A ``WebSocket``'s request as the engine read it, under the names ``HTTPConnection``
    and ``proxies.Source`` read: the ``WebSocket``'s own ``headers``, ``client`` and
    ``path_params`` are the parsed ones. Made when one of those is first parsed."""

    __slots__ = ("_connection",)

    def __init__(self, connection: _engine.Connection) -> None:
        self._connection = connection

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._connection.raw_headers

    @property
    def client(self) -> tuple[str, int] | None:
        return self._connection.raw_client

    @property
    def path_params(self) -> dict[str, str]:
        return self._connection.raw_path_params

    @property
    def path(self) -> str:
        return self._connection.path

    @property
    def query_string(self) -> str:
        return self._connection.query_string

    @property
    def scheme(self) -> str:
        return self._connection.scheme

    @property
    def server(self) -> tuple[str, int] | None:
        return self._connection.server


# The engine's methods that ``WebSocket`` wraps under the same name.
_engine_accept = _engine.Connection.accept
_engine_receive = _engine.Connection.receive
_engine_close = _engine.Connection.close


# ``Connection`` first: the engine's methods check their ``self`` against it on every call,
# and CPython's check walks the class's MRO until it finds it.
class WebSocket(_engine.Connection, HTTPConnection):
    """One WebSocket connection, as a handler sees it; like Starlette's, also a read-only
    mapping over its ``scope`` (``websocket["path"]``). Made by the server only.

    The engine's ``Connection`` supplies ``id``, ``subprotocols``, ``subprotocol``,
    ``latency`` and the per-message methods: ``receive_text``, ``receive_bytes``,
    ``send_text`` and ``send_bytes``. Past the server's ``outbox_limit`` a send's ``await``
    waits for the client to take it below half; if the client takes nothing for
    ``slow_consumer_timeout`` the socket is closed with 1013 and the send raises
    ``WebSocketDisconnect``, as does any send once the socket has ended."""

    scope_type = "websocket"

    def __init__(self, app: Any = None, forwarding: Forwarding = NO_FORWARDING) -> None:
        super().__init__(app, forwarding)
        self._connect_received = False
        self.refusal: Refusal | None = None

    # ---- the handshake request ----

    @property
    def _raw(self) -> _Handshake:
        return _Handshake(self)

    @property
    def _connection(self) -> WebSocket:
        """The engine's ``Connection`` of this socket: the socket itself."""
        return self

    def _scope_extras(self) -> dict[str, Any]:
        return {"subprotocols": self.subprotocols}

    @property
    def client_state(self) -> WebSocketState:
        return _STATES[self.client_state_value]

    @property
    def application_state(self) -> WebSocketState:
        return _STATES[self.application_state_value]

    # ---- the conversation ----

    def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes | str, bytes | str]] | None = None,
    ) -> Awaitable[None]:
        extra = None
        if headers is not None:
            extra = [(_text(name), _text(value)) for name, value in headers]
        accepted = _engine_accept(self, subprotocol, extra)
        self._connect_received = True  # receive() goes straight to the engine from now on
        if logger.isEnabledFor(logging.INFO):
            client, path = self._origin.client_text, self._origin.path
            logger.info('%s - "WebSocket %s" [accepted]', client, path)
        return accepted

    def receive(self) -> Awaitable[dict[str, Any]]:
        """The next ASGI-style message. Before ``accept`` the first is
        ``{"type": "websocket.connect"}``, as in Starlette."""
        if not self._connect_received and self.application_state_value == _CONNECTING:
            self._connect_received = True
            return _ready({"type": "websocket.connect"})
        return _engine_receive(self)

    async def receive_json(self, mode: str = "text") -> Any:
        _check_mode(mode)
        if mode == "text":
            return json.loads(await self.receive_text())
        return json.loads((await self.receive_bytes()).decode("utf-8"))

    async def iter_text(self) -> AsyncIterator[str]:
        try:
            while True:
                yield await self.receive_text()
        except WebSocketDisconnect:
            pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield await self.receive_bytes()
        except WebSocketDisconnect:
            pass

    async def iter_json(self) -> AsyncIterator[Any]:
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            pass

    def send_json(self, data: Any, mode: str = "text") -> Awaitable[None]:
        _check_mode(mode)
        text = _json_text(data)
        if mode == "text":
            return self.send_text(text)
        return self.send_bytes(text.encode("utf-8"))

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
        if self.application_state_value == _CONNECTING:
            self._refuse(Refusal(403, code, reason or ""))
        return _engine_close(self, code, reason)

    async def send_denial_response(self, response: Response) -> None:
        """Answer the handshake with ``response`` (status, headers, body) instead of the
        upgrade; only before ``accept``."""
        if self.application_state_value != _CONNECTING:
            raise RuntimeError(
                "send_denial_response must be called before accept() and before close()"
            )
        self._refuse(Refusal(response.status_code))
        self.reject(response.status_code, response.raw_headers, response.body)

    def _refuse(self, refusal: Refusal) -> None:
        self.refusal = refusal
        report_refusal(self, refusal)

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self.path}>"


async def close_unless_closed(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    """Close (or, before ``accept``, refuse) unless the app already did."""
    if websocket.application_state in (WebSocketState.CONNECTING, WebSocketState.CONNECTED):
        await websocket.close(code, reason)


async def _ready(message: dict[str, Any]) -> dict[str, Any]:
    return message


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
