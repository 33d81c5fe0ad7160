"""Type stubs for ferrosock's Rust engine (``ferrosock._engine``).

The engine owns every socket. Python sees these kinds of object:

* ``Server`` — listener, HTTP/1.1, WebSocket upgrades, the ready queue the event loop drains.
* ``Connection`` — one WebSocket, before and after the handshake is accepted.
* ``HttpRequest`` — one HTTP request, answered once with ``respond``.
* ``Registry`` — the native broadcast registry behind ``ferrosock.ConnectionManager``.
* ``TrustedProxies`` — ``forwarded_allow_ips``: which peers are proxies, which client an
  ``X-Forwarded-For`` chain names (the engine and ``proxies.Forwarding`` share it).

Awaitables returned by ``Connection`` methods finish on their first step when no wait is
needed (data already in the inbox, room in the outbox); only a real wait parks, on a
``Waiter``.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Self, final

from typing_extensions import disjoint_base

from ferrosock.config import Config

RouteKind = Literal["websocket", "http"]

@final
class Server:
    def __new__(
        cls,
        routes: list[tuple[str, RouteKind, list[str], int, dict[str, float]]],
        on_websocket: Callable[[int, Any], None],
        on_http: Callable[[int, HttpRequest], None],
        on_log: Callable[[int, str], None],
        config: Config,
        connection_class: type[Connection] | None = None,
        connection_args: tuple[Any, ...] | None = None,
    ) -> Server:
        """``routes``: ``(path template, kind, HTTP methods, route id, limits)``; templates
        use ``{name}`` segments and are compiled once; ``limits`` holds the rate limits a
        WebSocket route sets for itself (``max_messages_per_second``,
        ``max_bytes_per_second``), each replacing the server's. ``on_websocket`` and
        ``on_http`` are called on the event-loop thread (from ``drain``) with the route id
        and the new object (a ``Connection``, made as ``connection_class(*connection_args)``
        when a class is given); ``on_log`` with a ``logging`` level and a message the IO threads
        produced. ``config`` is read by attribute name, so each setting's default lives
        in ``Config`` only."""
    def start(self, event_loop: asyncio.AbstractEventLoop, log_level: int) -> None:
        """Bind and start serving on the running ``event_loop``: its ``call_soon``
        schedules ``flush`` when a handler the loop resumed sent more than one message,
        its ``call_later`` arms ``on_timer`` for the earliest heartbeat or closing
        deadline. Engine log lines below ``log_level`` are dropped before they are
        formatted."""
    @property
    def port(self) -> int: ...
    @property
    def ready_fd(self) -> int:
        """The eventfd the loop watches with ``add_reader(ready_fd, drain)``."""
    @property
    def poll_fd(self) -> int:
        """The epoll descriptor of the upgraded sockets: the loop watches it with
        ``add_reader(poll_fd, poll)``."""
    def poll(self) -> None:
        """Read, decode and write every WebSocket that is ready; resolve the receives that
        can finish. Call on the loop thread only."""
    def on_timer(self) -> None:
        """Send the pings and end the closing handshakes that are due (armed by the engine
        with ``call_later``)."""
    def stop(self) -> None:
        """Drop every socket still open (their connections end with 1006): the loop that
        drives them is going away."""
    def flush(self) -> None:
        """Write what handlers sent since the last flush, one ``writev`` per socket.
        Scheduled by the engine on the loop thread; nothing else needs to call it."""
    def drain(self) -> None:
        """Run every ready event: new connections and requests, wake-ups of parked awaitables,
        log lines. Call on the loop thread only."""
    def shutdown(self, code: int = 1001, reason: str = "server shutdown") -> None:
        """Stop accepting; close every open WebSocket with ``code``."""
    def connection_count(self) -> int: ...

@disjoint_base
class Connection:
    """One upgraded WebSocket. Made by the server only: as ``connection_class(*connection_args)``
    when the server has a ``connection_class`` (a subclass, such as ``ferrosock.WebSocket``),
    whose ``__init__`` gets those arguments; calling the class otherwise raises ``TypeError``.
    The ``raw_`` attributes are the request as the engine read it (no proxy headers applied,
    path parameters unconverted)."""

    def __new__(cls, *args: Any) -> Self: ...
    @property
    def id(self) -> int:
        """The engine's id of this connection, unique across the cluster (``docs/scaling.md``)."""
    route_id: int
    path: str
    query_string: str
    scheme: str
    raw_headers: list[tuple[str, str]]
    raw_client: tuple[str, int] | None
    server: tuple[str, int] | None
    raw_path_params: dict[str, str]
    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered."""
    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen in ``accept``."""
    @property
    def client_state_value(self) -> int:
        """Starlette's ``WebSocketState`` value: 0 connecting, 1 connected, 2 disconnected."""
    @property
    def application_state_value(self) -> int:
        """0 connecting, 1 connected, 2 disconnected (also once a handshake was refused)."""
    @property
    def refused(self) -> bool:
        """The handshake was answered with an HTTP response instead of the upgrade."""
    @property
    def latency(self) -> float | None:
        """The last ping round-trip in seconds, once a pong has come back."""
    @property
    def close_code(self) -> int | None: ...
    def accept(
        self, subprotocol: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> Awaitable[None]: ...
    def reject(
        self,
        status: int = 403,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the handshake with an HTTP response instead of the upgrade (before
        ``accept`` only): ``status``, ``headers`` and ``body``; without a body, the status's
        reason phrase as plain text. Counted in ``metrics()["handshakes_refused"]`` as
        ``denial_response`` with a body, ``error`` without (the server's 500 for a handler
        that failed before accepting)."""
    def receive(self) -> Awaitable[dict[str, Any]]:
        """An ASGI-style message: ``{"type": "websocket.receive", "text"|"bytes": ...}`` or
        ``{"type": "websocket.disconnect", "code": int, "reason": str}``. Once the end has
        been reported (by any receive), another receive raises ``RuntimeError``."""
    def receive_text(self) -> Awaitable[str]:
        """Raises ``WebSocketDisconnect`` when the connection has ended."""
    def receive_bytes(self) -> Awaitable[bytes]: ...
    def send_text(self, data: str) -> Awaitable[None]:
        """Queue a text message. Past the server's ``outbox_limit`` the ``await`` waits
        for the client to take it below half; if the client takes nothing for
        ``slow_consumer_timeout`` the socket is closed with 1013 and this raises
        ``WebSocketDisconnect``, as does any send once the socket has ended. The same
        holds for ``send_bytes``."""
    def send_bytes(self, data: bytes | bytearray | memoryview) -> Awaitable[None]: ...
    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]:
        """Before ``accept``: refuse with HTTP 403. After: send a close frame. A second
        close raises ``RuntimeError``."""

@final
class HttpRequest:
    route_id: int
    method: str
    path: str
    query_string: str
    scheme: str
    headers: list[tuple[str, str]]
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    path_params: dict[str, str]
    body: bytes
    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...

@final
class TrustedProxies:
    """``forwarded_allow_ips`` parsed: comma-separated addresses and CIDR networks, ``*``
    for any; anything else is a ``ValueError`` naming the setting. The engine counts
    ``max_connections_per_ip`` by the client it names, as ``proxies.Forwarding`` reports it."""

    def __new__(cls, spec: str) -> TrustedProxies: ...
    def __contains__(self, host: object, /) -> bool:
        """Whether ``host`` (an address string) is a trusted proxy; None, a Unix
        socket's peer, is trusted only by ``*``."""
    def client_host(self, forwarded_for: str) -> str | None:
        """The client an ``X-Forwarded-For`` value names: the rightmost address that is
        not a trusted proxy; the leftmost when every one is trusted; None when it names
        none."""

@final
class Registry:
    def __new__(
        cls, *, slow_consumer: Literal["wait", "close", "drop"], backlog_limit: int
    ) -> Registry: ...
    def add(self, conn: Connection) -> bool: ...
    def remove(self, conn: Connection) -> None: ...
    def join(self, conn: Connection, room: str) -> bool: ...
    def leave(self, conn: Connection, room: str) -> None: ...
    def broadcast_text(
        self, data: str, room: str | None = None, exclude: Connection | None = None
    ) -> None: ...
    def broadcast_bytes(
        self, data: bytes, room: str | None = None, exclude: Connection | None = None
    ) -> None: ...
    def send_text_to(self, conn_id: int, data: str) -> bool: ...
    def send_bytes_to(self, conn_id: int, data: bytes) -> bool: ...
    def backlog(self) -> int:
        """Bytes handed to the fan-out task and not yet offered to the members."""
    def backlog_fd(self) -> int: ...
    def await_backlog(self) -> bool: ...
    def backlog_drain(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, conn: Connection, /) -> bool: ...
    def rooms(self) -> list[str]: ...
    def members(self, room: str) -> list[int]: ...
    def stats(self) -> dict[str, int | str]: ...
    def set_backend(
        self,
        url: str,
        *,
        channel_prefix: str,
        name: str,
        publish_limit: int,
        presence_timeout: float,
    ) -> str:
        """Carry this registry's messages through Redis; returns the redacted address."""
    @staticmethod
    def backend_address(url: str) -> str:
        """The URL with its password hidden; ValueError when it is not a Redis URL."""
    def start_backend(self) -> int:
        """Start connecting (once); the eventfd that says ``backend_drain`` has news."""
    def backend_drain(self) -> list[tuple[Any, ...]]: ...
    def cluster_query(self, members: bool, room: str | None = None) -> int: ...
    @property
    def backend_state(self) -> str | None: ...

@final
class Done:
    """The awaitable of an operation that needed no wait: its first step finishes it."""
    def __await__(self) -> Done: ...
    def __next__(self) -> None: ...

@final
class Op:
    """The awaitable of a receive or send: finishes on its first step when the inbox has a
    message or the outbox has room, else parks on a ``Waiter``."""
    def __await__(self) -> Op: ...
    def __next__(self) -> Any: ...

@final
class Waiter:
    """What a parked ``Op`` hands its task: a future woken by the engine, which runs the
    task's wake-up at once when it is woken from a loop callback."""

    _asyncio_future_blocking: bool
    def get_loop(self) -> asyncio.AbstractEventLoop: ...
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def result(self) -> None: ...
    def exception(self) -> None: ...
    def add_done_callback(
        self, callback: Callable[[Waiter], object], *, context: contextvars.Context | None = None
    ) -> None: ...
    def remove_done_callback(self, callback: Callable[[Waiter], object]) -> int: ...
    def cancel(self, msg: object = None) -> bool: ...

def check_tls(config: Config) -> None:
    """Raise ValueError, naming the setting and the file, if the ``ssl_*`` settings do
    not make a usable TLS configuration."""

def metrics() -> dict[str, Any]:
    """``stats()`` plus ``close_codes`` ({label: count}), ``handshakes_refused`` ({reason:
    count} for every reason: bad_request, forbidden_origin, not_found, over_capacity,
    over_client_limit, app_refused, denial_response, error, shutdown) and ``ping_rtt``
    (``bounds_us``,
    per-bucket ``counts`` with one past the last bound, ``sum_us``)."""

def stats() -> dict[str, int]:
    """Process-wide bridge counters: ``futures_created`` (parks), ``fast_completions``,
    ``wakeups`` (eventfd writes), ``drains``, ``events``, ``yields``."""
