"""``App``: the application object, as FastAPI's ``FastAPI`` (also importable by that name).

It holds the routes (``app.router``), ``app.state``, ``app.dependency_overrides``,
``app.exception_handlers``, the lifespan, and the server settings given as keywords
(``App(port=9000, ws_ping_interval=10)``, checked against ``Config`` here), which
``ferrosock.run`` and the CLI read from ``app.settings``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Unpack

from .config import Config
from .datastructures import State
from .exceptions import ExceptionHandler
from .metrics import collect
from .params import Depends
from .responses import JSONResponse, Response
from .routing import APIRoute, APIRouter, Endpoint, Route, RouteLimits, WebSocketRoute

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]
LifecycleHandler = Callable[[], Any]


class App:
    def __init__(
        self,
        *,
        lifespan: Lifespan | None = None,
        dependencies: Sequence[Depends] | None = None,
        routes: Sequence[Route] | None = None,
        on_startup: Sequence[LifecycleHandler] | None = None,
        on_shutdown: Sequence[LifecycleHandler] | None = None,
        title: str = "ferrosock",
        description: str = "",
        version: str = "0.1.0",
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None,
        **settings: Any,
    ) -> None:
        Config.from_settings(settings)  # an unknown name fails here, naming it
        self.router = APIRouter(dependencies=dependencies, routes=routes)
        self.state = State()
        self.dependency_overrides: dict[Callable[..., Any], Callable[..., Any]] = {}
        self.exception_handlers: dict[Any, ExceptionHandler] = {}
        for key, handler in (exception_handlers or {}).items():
            self.add_exception_handler(key, handler)
        self.settings: dict[str, Any] = dict(settings)
        self.title = title
        self.description = description
        self.version = version
        self.on_startup: list[LifecycleHandler] = list(on_startup or [])
        self.on_shutdown: list[LifecycleHandler] = list(on_shutdown or [])
        if lifespan is not None and inspect.isasyncgenfunction(lifespan):
            # Starlette also takes a bare async generator function.
            lifespan = asynccontextmanager(lifespan)
        self._lifespan = lifespan

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    def metrics(self) -> dict[str, Any]:
        """This process's engine counters and every native manager's (see
        ``ferrosock.metrics.collect``); the ``metrics_path`` setting serves them to
        Prometheus."""
        return collect()

    def lifespan_context(self, app: Any) -> AbstractAsyncContextManager[Any]:
        """The server enters this before serving and leaves it after the last connection:
        ``on_startup`` handlers, then the ``lifespan`` up to its ``yield``; on the way out
        the rest of the ``lifespan``, then ``on_shutdown`` handlers."""
        return self._run_lifespan(app)

    @asynccontextmanager
    async def _run_lifespan(self, app: Any) -> AsyncIterator[Any]:
        for handler in self.on_startup:
            await _call_lifecycle_handler(handler)
        try:
            if self._lifespan is None:
                yield None
            else:
                async with self._lifespan(app) as state:
                    yield state
        finally:
            for handler in self.on_shutdown:
                await _call_lifecycle_handler(handler)

    def add_exception_handler(
        self, exc_class_or_status_code: int | type[BaseException], handler: ExceptionHandler
    ) -> None:
        """``handler(request_or_websocket, exc)`` answers ``exc``: for HTTP it returns the
        response; for a WebSocket it closes the socket (or refuses the handshake). A status
        code applies to ``HTTPException`` with that status; 500 or ``Exception`` to
        unexpected errors (the response is sent, the error still logged)."""
        key = exc_class_or_status_code
        is_status = isinstance(key, int) and not isinstance(key, bool)
        if not (is_status or (isinstance(key, type) and issubclass(key, BaseException))):
            raise TypeError(
                f"an exception handler is registered for an exception class or an HTTP "
                f"status code, got {key!r}"
            )
        if not callable(handler):
            raise TypeError(f"the exception handler for {key!r} is not callable: {handler!r}")
        self.exception_handlers[key] = handler

    def exception_handler(
        self, exc_class_or_status_code: int | type[BaseException]
    ) -> Callable[[Endpoint], Endpoint]:
        """``@app.exception_handler(MyError)``, as FastAPI's."""

        def register(handler: Endpoint) -> Endpoint:
            self.add_exception_handler(exc_class_or_status_code, handler)
            return handler

        return register

    def on_event(self, event_type: str) -> Callable[[Endpoint], Endpoint]:
        """``@app.on_event("startup")`` / ``("shutdown")``, as FastAPI (which prefers
        ``lifespan`` now; both work here)."""
        handlers = {"startup": self.on_startup, "shutdown": self.on_shutdown}
        if event_type not in handlers:
            raise ValueError(f"unknown event {event_type!r}; use 'startup' or 'shutdown'")

        def register(handler: Endpoint) -> Endpoint:
            handlers[event_type].append(handler)
            return handler

        return register

    # -- Delegated to the router ----------------------------------------------------------

    def websocket(
        self,
        path: str,
        name: str | None = None,
        *,
        dependencies: Sequence[Depends] | None = None,
        **limits: Unpack[RouteLimits],
    ) -> Callable[[Endpoint], Endpoint]:
        return self.router.websocket(path, name, dependencies=dependencies, **limits)

    def add_api_websocket_route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[None]],
        name: str | None = None,
        *,
        dependencies: Sequence[Depends] | None = None,
        **limits: Unpack[RouteLimits],
    ) -> WebSocketRoute:
        return self.router.add_api_websocket_route(
            path, endpoint, name, dependencies=dependencies, **limits
        )

    def websocket_route(
        self, path: str, name: str | None = None, **limits: Unpack[RouteLimits]
    ) -> Callable[[Endpoint], Endpoint]:
        return self.router.websocket_route(path, name, **limits)

    def add_websocket_route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[None]],
        name: str | None = None,
        **limits: Unpack[RouteLimits],
    ) -> WebSocketRoute:
        return self.router.add_websocket_route(path, endpoint, name, **limits)

    def api_route(
        self,
        path: str,
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        dependencies: Sequence[Depends] | None = None,
        status_code: int | None = None,
        response_class: type[Response] = JSONResponse,
        tags: Sequence[str] | None = None,
    ) -> Callable[[Endpoint], Endpoint]:
        return self.router.api_route(
            path,
            methods=methods,
            name=name,
            dependencies=dependencies,
            status_code=status_code,
            response_class=response_class,
            tags=tags,
        )

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> APIRoute:
        return self.router.add_api_route(path, endpoint, **options)

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.get(path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.post(path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.put(path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.delete(path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.patch(path, **options)

    def head(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.head(path, **options)

    def options(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.router.options(path, **options)

    def include_router(
        self,
        router: APIRouter,
        *,
        prefix: str = "",
        dependencies: Sequence[Depends] | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        self.router.include_router(router, prefix=prefix, dependencies=dependencies, tags=tags)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(routes={len(self.routes)})"


FastAPI = App


async def _call_lifecycle_handler(handler: LifecycleHandler) -> None:
    result = handler()
    if inspect.isawaitable(result):
        await result
