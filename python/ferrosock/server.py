"""Runs an ``App`` on the engine: the event-loop side of the bridge.

``Server.serve`` starts the engine, watches its two descriptors with ``loop.add_reader``
(``ready_fd``: one callback drains every event the engine's threads queued; ``poll_fd``:
one callback serves every WebSocket that is ready to read or write), runs a task per
WebSocket and per HTTP request, and on
shutdown closes every socket with 1001 and gives handlers ``graceful_shutdown_timeout`` to
finish.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from . import _engine
from .config import Config
from .exceptions import WebSocketDisconnect, call_exception_handler, server_error_handler
from .listeners import UnixListener, inherited_address
from .manager import configure_backends, stop_backends
from .metrics import PROMETHEUS_CONTENT_TYPE, collect, prometheus_text
from .proxies import NO_FORWARDING, Forwarding
from .requests import Request
from .responses import PlainTextResponse, Response
from .routing import APIRoute
from .websockets import WebSocket, WebSocketState, close_unless_closed

# Given a client's (host, port): the context its handler runs in, or None for a copy of
# the loop's. ``TestClient`` uses it to run each handler in a copy of the test's context.
ContextFor = Callable[[tuple[str, int] | None], contextvars.Context | None]

logger = logging.getLogger("ferrosock.error")
# At shutdown, after graceful_shutdown_timeout: how long cancelled handlers get to end, so
# that the whole shutdown stays within that timeout plus a second.
CANCEL_WAIT = 0.4
access_logger = logging.getLogger("ferrosock.access")


class Server:
    def __init__(self, app: Any, config: Config | None = None) -> None:
        self.app = app
        self.config = config or Config()
        self.started = threading.Event()
        self.port: int | None = None
        self._unix: UnixListener | None = None  # the socket file bound for ``uds``
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None
        self._exit_requested = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._routes: list[Any] = []
        self._forwarding = NO_FORWARDING
        self.context_for: ContextFor | None = None

    # ---- lifecycle ----

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = asyncio.Event()
        if self._exit_requested:
            self._exit.set()
        try:
            configure_backends(self.config, loop)
            with _signals_handled(loop, self.request_shutdown):
                async with self.app.lifespan_context(self.app):
                    engine = self._start_engine(loop)
                    try:
                        self._announce()
                        self.started.set()
                        await self._exit.wait()
                        await self._shutdown(engine)
                    finally:
                        loop.remove_reader(engine.ready_fd)
                        loop.remove_reader(engine.poll_fd)
                        engine.stop()
        except BaseException as error:
            self.error = error
            raise
        finally:
            stop_backends(loop)
            self._close_unix()
            self.started.set()

    def request_shutdown(self) -> None:
        """Ask ``serve`` to shut down gracefully; safe from any thread."""
        self._exit_requested = True
        loop, exit_event = self._loop, self._exit
        if loop is not None and exit_event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(exit_event.set)

    def _start_engine(self, loop: asyncio.AbstractEventLoop) -> _engine.Server:
        self._forwarding = Forwarding.from_config(self.config)
        self._routes = list(self.app.routes)
        if self.config.metrics_path:
            self._routes.append(metrics_route(self.config.metrics_path))
        table = [
            (r.template.engine_path, r.kind, list(r.methods), i, r.engine_limits)
            for i, r in enumerate(self._routes)
        ]
        config = self.config
        if config.uds is not None:
            self._unix = UnixListener(config.uds, config.backlog)
            config = config.replace(uds=None, fd=self._unix.fileno())
        engine = _engine.Server(
            table,
            self._on_websocket,
            self._on_http,
            self._on_log,
            config,
            connection_class=WebSocket,
            connection_args=(self.app, self._forwarding),
        )
        # Engine lines below this level are dropped in Rust, never formatted or passed here.
        level = logger.getEffectiveLevel()
        engine.start(loop, level)
        loop.add_reader(engine.ready_fd, engine.drain)
        loop.add_reader(engine.poll_fd, engine.poll)
        self.port = engine.port
        return engine

    def _close_unix(self) -> None:
        if self._unix is not None:
            self._unix.close()
            self._unix = None

    def _announce(self) -> None:
        scheme = "https" if self.config.ssl_certfile else "http"
        address: tuple[str, int] | str = (self.config.host, self.port or 0)
        inherited = ""
        if self.config.uds is not None:
            address = self.config.uds
        elif self.config.fd is not None:
            address, inherited = inherited_address(self.config.fd), f" (fd {self.config.fd})"
        if isinstance(address, str):
            where = f"unix:{address}"
        else:
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            where = f"{scheme}://{host}:{self.port or 0}"
        logger.info("ferrosock running on %s%s (Press CTRL+C to quit)", where, inherited)

    async def _shutdown(self, engine: _engine.Server) -> None:
        logger.info("Shutting down")
        engine.shutdown(1001, "server shutdown")
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.config.graceful_shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("Cancelled %d handler(s) still running at shutdown", len(pending))
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
        if pending:
            # Not awaited again: the process exits without them (process.serve).
            logger.warning("%d handler(s) ignored being cancelled", len(pending))
        logger.info("Finished server process")

    # ---- engine callbacks (on the loop thread, from engine.drain) ----

    def _spawn(
        self, coroutine: Any, client: tuple[str, int] | None, forgets_itself: bool = False
    ) -> None:
        """Run ``coroutine`` as a task that ``_tasks`` holds until it is done. With
        ``forgets_itself`` the coroutine takes its task out of ``_tasks`` itself as it
        ends (``ended``), so a long-lived handler's task keeps no callback."""
        context = self.context_for(client) if self.context_for is not None else None
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        self._tasks.add(task)
        if not forgets_itself:
            task.add_done_callback(self._tasks.discard)

    def _on_websocket(self, route_id: int, websocket: WebSocket) -> None:
        route = self._routes[route_id]
        self._spawn(route.serve(websocket, self), websocket.raw_client, forgets_itself=True)

    def _on_http(self, route_id: int, http_request: _engine.HttpRequest) -> None:
        self._spawn(self._run_http(self._routes[route_id], http_request), http_request.client)

    @staticmethod
    def _on_log(level: int, message: str) -> None:
        logger.log(level, message)

    # ---- handlers ----

    async def failed(self, websocket: WebSocket, exc: Exception) -> None:
        """A WebSocket endpoint raised ``exc`` (``WebSocketRoute.serve``)."""
        if isinstance(exc, WebSocketDisconnect):
            return
        logger.error("Exception in WebSocket handler for %s", websocket.path, exc_info=exc)
        if websocket.application_state is WebSocketState.CONNECTING:
            websocket.reject(500)  # as an ASGI server answers an app failing early
        elif websocket.application_state is WebSocketState.CONNECTED:
            await websocket.close(1011, "internal error")

    async def ended(self, websocket: WebSocket) -> None:
        """A WebSocket endpoint is over (``WebSocketRoute.serve``)."""
        # Returned without closing: close with 1000 (refuse, if it never accepted).
        try:
            await close_unless_closed(websocket, 1000)
            self._log_websocket_end(websocket)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    def _log_websocket_end(self, websocket: WebSocket) -> None:
        if not (self.config.access_log and access_logger.isEnabledFor(logging.INFO)):
            return
        client, path = websocket._origin.client_text, websocket._origin.path
        refusal = websocket.refusal
        if refusal is not None and refusal.code is not None:
            access_logger.info(
                '%s - "WebSocket %s" %d (closed before accept: %d %s)',
                client,
                path,
                refusal.status_code,
                refusal.code,
                refusal.reason or "(no reason)",
            )
        elif websocket.refused:
            status = refusal.status_code if refusal is not None else 500
            access_logger.info('%s - "WebSocket %s" %d', client, path, status)
        else:
            access_logger.info(
                '%s - "WebSocket %s" closed (%s)',
                client,
                path,
                websocket.close_code,
            )

    async def _run_http(self, route: Any, http_request: _engine.HttpRequest) -> None:
        request = Request(http_request, self.app, self._forwarding)
        sent: list[Response] = []

        def respond(response: Response) -> None:
            body = b"" if http_request.method == "HEAD" else response.body
            http_request.respond(response.status_code, response.raw_headers, body)
            sent.append(response)

        try:
            await route.handle(request, respond)
        except Exception as exc:
            logger.exception(
                "Exception in HTTP handler for %s %s", http_request.method, http_request.path
            )
            if not sent:
                respond(await self._server_error_response(request, exc))
        response = sent[0]
        if self.config.access_log and access_logger.isEnabledFor(logging.INFO):
            client, path = request._origin.client_text, request._origin.path
            query = f"?{http_request.query_string}" if http_request.query_string else ""
            access_logger.info(
                '%s - "%s %s%s HTTP/1.1" %d',
                client,
                http_request.method,
                path,
                query,
                response.status_code,
            )

    async def _server_error_response(self, request: Request, exc: Exception) -> Response:
        """The app's handler for 500 / ``Exception`` if it has one, else a plain 500."""
        handler = server_error_handler(getattr(self.app, "exception_handlers", None) or {})
        if handler is not None:
            try:
                response = await call_exception_handler(handler, request, exc)
                if isinstance(response, Response):
                    return response
                logger.error("The server error handler returned %r, not a Response", response)
            except Exception:
                logger.exception("The server error handler failed")
        return PlainTextResponse("Internal Server Error", status_code=500)


class _signals_handled:
    """SIGINT/SIGTERM request a graceful shutdown while in the main thread; a second
    SIGINT (Ctrl-C pressed again) stops at once. Other repeats are ignored: a worker gets
    Ctrl-C from the terminal and SIGTERM from its supervisor, and must still shut down
    gracefully."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_signal: Any) -> None:
        self.loop = loop
        self.on_signal = on_signal
        self.installed: list[int] = []
        self.interrupted = False

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGINT:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
        self.on_signal()

    def __enter__(self) -> _signals_handled:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.loop.add_signal_handler(sig, self._handle, sig)
                    self.installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for sig in self.installed:
            self.loop.remove_signal_handler(sig)


def metrics_route(path: str) -> APIRoute:
    async def metrics_page() -> Response:
        text = prometheus_text(collect())
        return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)

    return APIRoute(path, metrics_page, name="metrics")
