"""``Request``: what an HTTP route's handler sees, as Starlette's ``Request``.

Built by the server for each HTTP request around the engine's ``HttpRequest``; every
part is parsed on first use only.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ferrosock.datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from ferrosock.proxies import NO_FORWARDING, Forwarding, Origin

if TYPE_CHECKING:
    from ferrosock import _engine


class Request:
    def __init__(
        self, http_request: _engine.HttpRequest, app: Any, forwarding: Forwarding = NO_FORWARDING
    ) -> None:
        self._http_request = http_request
        self.app = app
        self._forwarding = forwarding
        self._path_params: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        return self._http_request.method

    @cached_property
    def _origin(self) -> Origin:
        """The real client, scheme and full path (behind a trusted proxy: what it forwarded)."""
        return self._forwarding.origin(self._http_request, self.headers, False)

    @cached_property
    def url(self) -> URL:
        request, origin = self._http_request, self._origin
        return URL.from_parts(
            origin.scheme, self.headers, request.server, origin.path, request.query_string
        )

    @cached_property
    def scope(self) -> dict[str, Any]:
        """An ASGI-like scope, for code that reads ``request.scope[...]``."""
        request = self._http_request
        return self._origin.scope(
            "http",
            request,
            method=request.method,
            path_params=self.path_params,
            app=self.app,
            state=self.state,
        )

    @cached_property
    def headers(self) -> Headers:
        return Headers(self._http_request.headers)

    @cached_property
    def query_params(self) -> QueryParams:
        return QueryParams(self._http_request.query_string)

    @property
    def path_params(self) -> dict[str, Any]:
        """The path's parameters, converted by the route's convertors (``{id:int}``)."""
        if self._path_params is None:
            self._path_params = self._http_request.path_params
        return self._path_params

    @cached_property
    def cookies(self) -> dict[str, str]:
        return parse_cookies("; ".join(self.headers.getlist("cookie")))

    @cached_property
    def client(self) -> Address:
        return Address(*self._origin.client)

    @cached_property
    def state(self) -> State:
        return State()

    async def body(self) -> bytes:
        return self._http_request.body

    async def json(self) -> Any:
        return json.loads(self._http_request.body)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method} {self.url})"
