"""``Request``: what an HTTP route's handler sees, as Starlette's ``Request``, and
``HTTPConnection``, what it shares with ``WebSocket``.

Built by the server for each HTTP request around the engine's ``HttpRequest``; every
part is parsed on first use only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from .proxies import NO_FORWARDING, Forwarding, Origin, Source

if TYPE_CHECKING:
    from . import _engine


class HTTPConnection(Mapping[str, Any]):
    """What ``Request`` and ``WebSocket`` share, as in Starlette: the request's headers,
    query, path parameters, cookies, URL, client, state and scope, each parsed on first
    use, and read-only mapping access to the scope (``connection["path"]``). ``raw`` is
    the engine's object (an ``HttpRequest`` or a ``Connection``)."""

    scope_type: str = "http"

    # A mapping compares by content; a connection is itself (managers keep them in lists).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, app: Any, forwarding: Forwarding) -> None:
        self.app = app
        self._forwarding = forwarding
        self._path_params: dict[str, Any] | None = None

    @property
    def _raw(self) -> Source:
        """The request as the engine read it (``proxies.Source``)."""
        raise NotImplementedError

    @cached_property
    def state(self) -> State:
        """Per-connection attributes (``websocket.state.user = ...``), made on first use."""
        return State()

    @cached_property
    def headers(self) -> Headers:
        return Headers(self._raw.headers)

    @cached_property
    def query_params(self) -> QueryParams:
        return QueryParams(self._raw.query_string)

    @property
    def path_params(self) -> dict[str, Any]:
        """The path's parameters, converted by the route's convertors (``{id:int}``)."""
        if self._path_params is None:
            self._path_params = self._raw.path_params
        return self._path_params

    @cached_property
    def cookies(self) -> dict[str, str]:
        return parse_cookies("; ".join(self.headers.getlist("cookie")))

    @cached_property
    def _origin(self) -> Origin:
        """The real client, scheme and full path (behind a trusted proxy: what it forwarded)."""
        return self._forwarding.origin(self._raw, self.headers, self.scope_type == "websocket")

    @cached_property
    def url(self) -> URL:
        raw, origin = self._raw, self._origin
        return URL.from_parts(
            origin.scheme, self.headers, raw.server, origin.path, raw.query_string
        )

    @cached_property
    def client(self) -> Address | None:
        """None on a Unix socket, unless a trusted proxy named the client."""
        client = self._origin.client
        return None if client is None else Address(*client)

    @cached_property
    def scope(self) -> dict[str, Any]:
        """An ASGI-like scope, for code that reads ``connection.scope[...]``."""
        return self._origin.scope(
            self.scope_type,
            self._raw,
            path_params=self.path_params,
            app=self.app,
            state=self.state,
            **self._scope_extras(),
        )

    def _scope_extras(self) -> dict[str, Any]:
        return {}

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)


class Request(HTTPConnection):
    def __init__(
        self, http_request: _engine.HttpRequest, app: Any, forwarding: Forwarding = NO_FORWARDING
    ) -> None:
        super().__init__(app, forwarding)
        self._http_request = http_request

    @property
    def _raw(self) -> _engine.HttpRequest:
        return self._http_request

    @property
    def method(self) -> str:
        return self._http_request.method

    def _scope_extras(self) -> dict[str, Any]:
        return {"method": self._http_request.method}

    async def body(self) -> bytes:
        return self._http_request.body

    async def json(self) -> Any:
        return json.loads(self._http_request.body)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method} {self.url})"
