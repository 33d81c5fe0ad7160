"""Routes and routers, as FastAPI's ``APIRouter``.

A route is registered once: its path template is checked, its endpoint's signature is
analysed into a call plan (``dependencies.py``), and the server compiles every route's
template into its table at start-up. Per connection or request a route only runs its plan
and calls its endpoint.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Unpack

from .config import check_positive
from .convertors import PathTemplate, parse_path
from .dependencies import PlanBuilder, SolveContext, is_coroutine_callable
from .exceptions import (
    ExceptionHandlers,
    HTTPException,
    RequestValidationError,
    WebSocketException,
    WebSocketRequestValidationError,
    call_exception_handler,
    lookup_exception_handler,
)
from .outcomes import report_end
from .params import Depends
from .responses import JSONResponse, PlainTextResponse, Response
from .status import WS_1000_NORMAL_CLOSURE, WS_1008_POLICY_VIOLATION
from .websockets import close_unless_closed

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
Respond = Callable[[Response], None]

_CLOSE_REASON_LIMIT = 123  # bytes: a close frame's payload is 125, two are the code


class RouteLimits(TypedDict, total=False):
    """The rate limits a WebSocket route may set for itself, each replacing the server's
    ``ws_max_messages_per_second`` / ``ws_max_bytes_per_second`` (docs/security.md)."""

    max_messages_per_second: float | None
    max_bytes_per_second: float | None


def _check_prefix(prefix: str) -> None:
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"a path prefix must start with '/', got {prefix!r}")
    if prefix.endswith("/"):
        raise ValueError(
            f"a path prefix must not end with '/', as the routes start with '/': {prefix!r}"
        )


def _name_of(endpoint: Callable[..., Any]) -> str:
    return getattr(endpoint, "__name__", type(endpoint).__name__)


def _exception_handlers(connection: Any) -> ExceptionHandlers:
    handlers: ExceptionHandlers = getattr(connection.app, "exception_handlers", None) or {}
    return handlers


def _converted_path_params(template: PathTemplate, connection: Any) -> bool:
    """Apply the path's convertors to ``connection``'s parameters; false if one does not
    match (the path then matches no route, as in Starlette)."""
    if not template.convertors:
        return True
    params = template.convert(connection.path_params)
    if params is None:
        return False
    connection._path_params = params
    return True


class WebSocketRoute:
    """A WebSocket endpoint. Its parameters are solved from the handshake request before
    the endpoint runs; a value that is missing or does not convert raises
    ``WebSocketRequestValidationError``, which by default refuses the handshake with 1008,
    as FastAPI. With ``connection_first`` the endpoint
    is called as ``endpoint(websocket)``, Starlette's contract. ``max_messages_per_second``
    and ``max_bytes_per_second`` replace the server's ``ws_max_messages_per_second`` and
    ``ws_max_bytes_per_second`` for this route; the engine enforces them."""

    kind: Literal["websocket"] = "websocket"

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[None]],
        *,
        name: str | None = None,
        dependencies: Sequence[Depends] | None = None,
        connection_first: bool = False,
        max_messages_per_second: float | None = None,
        max_bytes_per_second: float | None = None,
    ) -> None:
        check_positive("max_messages_per_second", max_messages_per_second)
        check_positive("max_bytes_per_second", max_bytes_per_second)
        if not is_coroutine_callable(endpoint):
            raise TypeError(
                f"websocket endpoint {_name_of(endpoint)} must be an async function "
                "(async def), as it awaits the socket"
            )
        self.path = path
        self.template = parse_path(path, _name_of(endpoint))
        self.endpoint = endpoint
        self.name = name or _name_of(endpoint)
        self.dependencies = list(dependencies or [])
        self.connection_first = connection_first
        self.max_messages_per_second = max_messages_per_second
        self.max_bytes_per_second = max_bytes_per_second
        builder = PlanBuilder("websocket", self.template.param_names)
        self.plan = builder.build(
            endpoint, dependencies=self.dependencies, connection_first=connection_first
        )
        # An endpoint that takes only the socket (the common case) is called directly:
        # no solving state stays alive beside each connection's handler.
        plan = self.plan
        self._socket_only = (
            plan.connection_names[0]
            if not plan.dependencies and not plan.values and len(plan.connection_names) == 1
            else None
        )

    @property
    def methods(self) -> list[str]:
        return []

    @property
    def engine_limits(self) -> dict[str, float]:
        """The limits this route sets, as the engine's route table takes them."""
        limits = {
            "max_messages_per_second": self.max_messages_per_second,
            "max_bytes_per_second": self.max_bytes_per_second,
        }
        return {name: float(value) for name, value in limits.items() if value is not None}

    def copy_with(self, path: str, dependencies: Sequence[Depends]) -> WebSocketRoute:
        return WebSocketRoute(
            path,
            self.endpoint,
            name=self.name,
            dependencies=dependencies,
            connection_first=self.connection_first,
            max_messages_per_second=self.max_messages_per_second,
            max_bytes_per_second=self.max_bytes_per_second,
        )

    async def handle(self, websocket: Any) -> None:
        """Run the endpoint. An exception it raises goes to the app's handler for it;
        ``WebSocketException`` (by default) closes, or refuses the handshake, with its code
        and reason; anything else is re-raised for the server to log."""
        await self.serve(websocket, None)

    async def serve(self, websocket: Any, server: ServerSide | None) -> None:
        """``handle``, and with ``server`` the server's part around it (``failed`` with
        what ``handle`` would re-raise, then ``ended`` whatever happened) in the same
        coroutine: one frame fewer kept alive beside every connection's handler."""
        try:
            outcome: BaseException | None = None
            try:
                if not _converted_path_params(self.template, websocket):
                    await websocket.close(WS_1000_NORMAL_CLOSURE)
                elif self._socket_only is not None:
                    await self.endpoint(**{self._socket_only: websocket})
                else:
                    await self._run(websocket)
            except Exception as exc:
                handler = lookup_exception_handler(_exception_handlers(websocket), exc)
                if handler is not None:
                    await call_exception_handler(handler, websocket, exc)
                elif isinstance(exc, WebSocketException):
                    await close_unless_closed(websocket, exc.code, exc.reason)
                elif isinstance(exc, WebSocketRequestValidationError):
                    reason = _close_reason(exc.errors())
                    await close_unless_closed(websocket, WS_1008_POLICY_VIOLATION, reason)
                else:
                    outcome = exc
                    raise
            finally:
                report_end(websocket, outcome)
        except Exception as exc:
            if server is None:
                raise
            await server.failed(websocket, exc)
        finally:
            if server is not None:
                await server.ended(websocket)

    async def _run(self, websocket: Any) -> None:
        async with SolveContext(websocket) as ctx:
            try:
                kwargs = await self.plan.solve_or_raise(ctx)
            except RequestValidationError as exc:
                raise WebSocketRequestValidationError(exc.errors()) from exc
            await self.plan.invoke(kwargs, ctx, None)
            await ctx.end_function_scope()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, name={self.name!r})"


class APIRoute:
    """An HTTP endpoint. What it returns becomes the response: a ``Response`` as is,
    anything else through ``response_class`` (JSON by default) with ``status_code``.
    ``HTTPException`` answers ``{"detail": ...}`` with its status; parameters that are
    missing or do not convert answer 422 with FastAPI's error list."""

    kind: Literal["http"] = "http"

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        dependencies: Sequence[Depends] | None = None,
        status_code: int | None = None,
        response_class: type[Response] = JSONResponse,
        tags: Sequence[str] | None = None,
    ) -> None:
        self.path = path
        self.template = parse_path(path, _name_of(endpoint))
        self.endpoint = endpoint
        self.methods = list(dict.fromkeys(method.upper() for method in (methods or ["GET"])))
        self.name = name or _name_of(endpoint)
        self.dependencies = list(dependencies or [])
        self.status_code = status_code
        self.response_class = response_class
        self.tags = list(tags or [])
        builder = PlanBuilder("http", self.template.param_names)
        self.plan = builder.build(endpoint, dependencies=self.dependencies)

    @property
    def engine_limits(self) -> dict[str, float]:
        """Rate limits are the WebSocket routes' only."""
        return {}

    def copy_with(self, path: str, dependencies: Sequence[Depends]) -> APIRoute:
        return APIRoute(
            path,
            self.endpoint,
            methods=self.methods,
            name=self.name,
            dependencies=dependencies,
            status_code=self.status_code,
            response_class=self.response_class,
            tags=self.tags,
        )

    async def handle(self, request: Any, respond: Respond) -> None:
        """Answer ``request`` through ``respond``. Clean-up of ``"function"``-scoped
        dependencies runs before the response is sent, of ``"request"``-scoped ones after.
        An exception goes to the app's handler for it (``HTTPException`` and parameter
        errors have defaults); anything else is re-raised for the server (500)."""
        outcome: BaseException | None = None
        try:
            if not _converted_path_params(self.template, request):
                respond(PlainTextResponse("Not Found", status_code=404))
                return
            responded = False
            try:
                async with SolveContext(request) as ctx:
                    kwargs = await self.plan.solve_or_raise(ctx)
                    result = await self.plan.invoke(kwargs, ctx, None)
                    await ctx.end_function_scope()
                    respond(self._response_of(result))
                    responded = True
            except Exception as exc:
                if responded:
                    raise  # a clean-up after the response failed: only the log can tell
                respond(await _exception_response(request, exc))
        except Exception as exc:
            outcome = exc
            raise
        finally:
            report_end(request, outcome)

    def _response_of(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if self.status_code in (204, 304):
            return Response(status_code=self.status_code)
        return self.response_class(result, status_code=self.status_code or 200)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, methods={self.methods!r})"


Route = WebSocketRoute | APIRoute


class ServerSide(Protocol):
    """What the server does around a WebSocket endpoint (``WebSocketRoute.serve``)."""

    async def failed(self, websocket: Any, exc: Exception) -> None:
        """The endpoint raised ``exc`` and nothing handled it."""

    async def ended(self, websocket: Any) -> None:
        """The endpoint is over, however it ended."""


async def _exception_response(request: Any, exc: Exception) -> Response:
    """The response for ``exc``: from the app's handler for it, else the defaults for
    ``HTTPException`` and parameter errors; any other exception is re-raised."""
    handler = lookup_exception_handler(_exception_handlers(request), exc)
    if handler is not None:
        response = await call_exception_handler(handler, request, exc)
        if not isinstance(response, Response):
            raise TypeError(
                f"the exception handler {_name_of(handler)} for {type(exc).__name__} "
                f"returned {response!r}; it must return a Response"
            )
        return response
    if isinstance(exc, HTTPException):
        return _http_exception_response(exc)
    if isinstance(exc, RequestValidationError):
        return JSONResponse({"detail": exc.errors()}, status_code=422)
    raise exc


def _http_exception_response(exc: HTTPException) -> Response:
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail if exc.detail is not None else http.HTTPStatus(exc.status_code).phrase
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _close_reason(errors: list[dict[str, Any]]) -> str:
    """A short, human-readable reason that fits in a close frame."""
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error["loc"])
        parts.append(f"{location}: {error['msg']}")
    reason = "; ".join(parts).encode("utf-8")[:_CLOSE_REASON_LIMIT]
    return reason.decode("utf-8", errors="ignore")


class APIRouter:
    """A group of routes under a common ``prefix`` and ``dependencies``, to be included in
    an app (or another router) with ``include_router``."""

    def __init__(
        self,
        *,
        prefix: str = "",
        dependencies: Sequence[Depends] | None = None,
        tags: Sequence[str] | None = None,
        routes: Sequence[Route] | None = None,
    ) -> None:
        _check_prefix(prefix)
        self.prefix = prefix
        self.dependencies = list(dependencies or [])
        self.tags = list(tags or [])
        self.routes: list[Route] = list(routes or [])

    # -- WebSocket routes ---------------------------------------------------------------

    def add_api_websocket_route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[None]],
        name: str | None = None,
        *,
        dependencies: Sequence[Depends] | None = None,
        **limits: Unpack[RouteLimits],
    ) -> WebSocketRoute:
        route = WebSocketRoute(
            self.prefix + path,
            endpoint,
            name=name,
            dependencies=[*self.dependencies, *(dependencies or [])],
            **limits,
        )
        self.routes.append(route)
        return route

    def websocket(
        self,
        path: str,
        name: str | None = None,
        *,
        dependencies: Sequence[Depends] | None = None,
        **limits: Unpack[RouteLimits],
    ) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            self.add_api_websocket_route(path, endpoint, name, dependencies=dependencies, **limits)
            return endpoint

        return register

    def add_websocket_route(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[None]],
        name: str | None = None,
        **limits: Unpack[RouteLimits],
    ) -> WebSocketRoute:
        """Starlette's form: the endpoint is called as ``endpoint(websocket)``."""
        route = WebSocketRoute(
            self.prefix + path,
            endpoint,
            name=name,
            dependencies=self.dependencies,
            connection_first=True,
            **limits,
        )
        self.routes.append(route)
        return route

    def websocket_route(
        self, path: str, name: str | None = None, **limits: Unpack[RouteLimits]
    ) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            self.add_websocket_route(path, endpoint, name, **limits)
            return endpoint

        return register

    # -- HTTP routes --------------------------------------------------------------------

    def add_api_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        dependencies: Sequence[Depends] | None = None,
        status_code: int | None = None,
        response_class: type[Response] = JSONResponse,
        tags: Sequence[str] | None = None,
    ) -> APIRoute:
        route = APIRoute(
            self.prefix + path,
            endpoint,
            methods=methods,
            name=name,
            dependencies=[*self.dependencies, *(dependencies or [])],
            status_code=status_code,
            response_class=response_class,
            tags=[*self.tags, *(tags or [])],
        )
        self.routes.append(route)
        return route

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
        def register(endpoint: Endpoint) -> Endpoint:
            self.add_api_route(
                path,
                endpoint,
                methods=methods,
                name=name,
                dependencies=dependencies,
                status_code=status_code,
                response_class=response_class,
                tags=tags,
            )
            return endpoint

        return register

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["PUT"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["DELETE"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["PATCH"], **options)

    def head(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["HEAD"], **options)

    def options(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, methods=["OPTIONS"], **options)

    # -- Composition --------------------------------------------------------------------

    def include_router(
        self,
        router: APIRouter,
        *,
        prefix: str = "",
        dependencies: Sequence[Depends] | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        """Add copies of ``router``'s routes under ``self.prefix + prefix``, running this
        router's dependencies, then ``dependencies``, then the route's own. Routes added to
        ``router`` afterwards are not included."""
        _check_prefix(prefix)
        outer_dependencies = [*self.dependencies, *(dependencies or [])]
        for route in router.routes:
            copied = route.copy_with(
                self.prefix + prefix + route.path, [*outer_dependencies, *route.dependencies]
            )
            if isinstance(copied, APIRoute):
                copied.tags = [*self.tags, *(tags or []), *copied.tags]
            self.routes.append(copied)
