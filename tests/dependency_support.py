"""Helpers for the routing and dependency tests that run a route's plan without a server:
a stand-in for the connection a route receives, and a way to run one ``handle`` call."""

from __future__ import annotations

import asyncio
from typing import Any

from ferrosock.datastructures import Address, Headers, QueryParams, parse_cookies
from ferrosock.websockets import WebSocketState


class FakeApp:
    def __init__(self) -> None:
        self.dependency_overrides: dict[Any, Any] = {}


class FakeConnection:
    """What a route reads from a ``WebSocket`` or ``Request``: the parsed handshake."""

    def __init__(
        self,
        app: Any = None,
        *,
        path_params: dict[str, str] | None = None,
        query_string: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.app = app if app is not None else FakeApp()
        self.path_params = path_params or {}
        self.query_params = QueryParams(query_string)
        self.headers = Headers(headers or [])
        self.cookies = parse_cookies(self.headers.get("cookie", ""))
        self.client = Address("127.0.0.1", 50000)
        self.application_state = WebSocketState.CONNECTING
        self.closed: tuple[int, str | None] | None = None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """As ``WebSocket.close`` before ``accept``: the handshake is refused."""
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


class FakeHttpRequest:
    """The engine's ``HttpRequest`` as ``ferrosock.requests.Request`` reads it."""

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query_string: str = "",
        headers: list[tuple[str, str]] | None = None,
        path_params: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.route_id = 0
        self.method = method
        self.path = path
        self.query_string = query_string
        self.scheme = "http"
        self.headers = headers or [("host", "testserver")]
        self.client = ("127.0.0.1", 50000)
        self.server = ("127.0.0.1", 8000)
        self.path_params = path_params or {}
        self.body = body


def response_of(route: Any, request: Any) -> Any:
    """What an HTTP route's ``handle`` answers ``request`` with."""
    sent: list[Any] = []
    run(route.handle(request, sent.append))
    assert len(sent) == 1, f"the route responded {len(sent)} times"
    return sent[0]


def run(awaitable: Any) -> Any:
    async def wrapper() -> Any:
        return await awaitable

    return asyncio.run(wrapper())
