"""``ConnectionManager``: the FastAPI docs' class, with fan-out done by the engine.

Same methods as the docs' class (``connect``, ``disconnect``, ``send_personal_message``,
``broadcast``), plus rooms, ``send_to`` and counters. A broadcast hands one message to the
engine and returns; the engine offers it to every member's outbox on its IO threads.
A member whose outbox is full is waited for, as the docs' ``await send_text`` per member
waits, until it has made no progress for ``slow_consumer_timeout`` (then it is closed with
1013); publishers wait once the manager's backlog is full, so memory stays bounded.
Everything one manager sends is delivered in the order it was asked. Sockets that end
leave the manager by themselves.

With a broadcast backend (``backend="redis://..."`` or the server's ``broadcast_backend``
setting) the same calls reach members on every process and host: each broadcast is
published once to Redis, and each process's engine delivers what it receives to its own
members, with no Python per message (see ``docs/scaling.md``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import _engine
from .config import Config
from .websockets import WebSocket, _json_text

logger = logging.getLogger("ferrosock.error")

ReconnectHook = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class BackendSettings:
    """The server settings a manager's backend is made from."""

    url: str | None
    channel_prefix: str
    publish_limit: int
    presence_timeout: float

    @classmethod
    def from_config(cls, config: Config) -> BackendSettings:
        settings = cls(
            url=config.broadcast_backend,
            channel_prefix=config.broadcast_channel_prefix,
            publish_limit=config.broadcast_publish_limit,
            presence_timeout=config.broadcast_presence_timeout,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.url is not None:
            _engine.Registry.backend_address(self.url)
        if not self.channel_prefix or ":" in self.channel_prefix:
            raise ValueError(
                "broadcast_channel_prefix must be a non-empty name without ':', "
                f"not {self.channel_prefix!r}"
            )
        if not isinstance(self.publish_limit, int) or self.publish_limit <= 0:
            raise ValueError(
                f"broadcast_publish_limit must be a positive number of bytes, "
                f"not {self.publish_limit!r}"
            )
        if not self.presence_timeout > 0:
            raise ValueError(
                f"broadcast_presence_timeout must be a positive number of seconds, "
                f"not {self.presence_timeout!r}"
            )


class ConnectionManager:
    def __init__(
        self,
        *,
        slow_consumer: Literal["wait", "close", "drop"] = "wait",
        backlog_limit: int = 8 << 20,
        backend: str | None = None,
        name: str = "default",
    ) -> None:
        """``slow_consumer``: what a broadcast does to a member whose outbox is full
        (over the server's ``outbox_limit``) — ``"wait"`` for it to drain, so that a
        slower reader still gets every message in order, and close it with 1013 only
        once it has taken no byte for the server's ``slow_consumer_timeout``; ``"close"``
        it with 1013 at once (the client can reconnect and resync); or ``"drop"`` the
        message for that member (counted in ``stats()["dropped"]``). While the fan-out
        waits for a member, this manager's later messages wait behind it (other managers
        and sockets do not).

        ``backlog_limit``: bytes handed over for fan-out but not yet offered to members.
        A publisher that gets this far ahead of the fan-out waits in ``broadcast`` until
        it is half caught up, so a fast publisher cannot grow the server's memory.

        ``backend``: a Redis URL (``redis://[user:password@]host:port/db``, ``rediss://``
        for TLS) that carries this manager's messages to every process using the same
        backend and ``name``. Without it, the server's ``broadcast_backend`` setting
        applies; with neither, everything stays in this process.

        ``name``: tells managers apart on a shared backend (their channels are
        ``<broadcast_channel_prefix>:<name>:...``)."""
        if backend is not None:
            _engine.Registry.backend_address(backend)
        if not name or ":" in name:
            raise ValueError(f"a manager's name must be non-empty and without ':', not {name!r}")
        self._registry = _engine.Registry(slow_consumer=slow_consumer, backlog_limit=backlog_limit)
        self._backlog_limit = backlog_limit
        self._sockets: weakref.WeakValueDictionary[int, WebSocket] = weakref.WeakValueDictionary()
        self.name = name
        self._backend_url = backend
        self._backend = _Backend(self)
        self._catch_up = _CatchUp(self._registry)
        _live_managers.add(self)

    # ---- the docs' methods ----

    async def connect(self, websocket: WebSocket, room: str | None = None) -> None:
        """Accept the handshake and register the socket (in ``room`` if given)."""
        await websocket.accept()
        self.add(websocket, room)

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget the socket; calling it again, or for a socket that already ended, is fine."""
        self._registry.remove(websocket)
        self._sockets.pop(websocket.id, None)

    async def send_personal_message(self, message: str | bytes, websocket: WebSocket | int) -> None:
        """Send to one socket: a ``WebSocket``, or the ``id`` of a member on any process."""
        if isinstance(websocket, int):
            await self.send_to(websocket, message)
        elif websocket in self._registry:
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
        self._registry.broadcast_text(message, room, exclude)
        await self._keep_up()

    # ---- more ----

    def add(self, websocket: WebSocket, room: str | None = None) -> None:
        """Register an already accepted socket."""
        self._backend.ensure_started()
        if room is None:
            self._registry.add(websocket)
        else:
            self._registry.join(websocket, room)
        self._sockets[websocket.id] = websocket

    async def broadcast_json(
        self, data: Any, room: str | None = None, exclude: WebSocket | None = None
    ) -> None:
        self._registry.broadcast_text(_json_text(data), room, exclude)
        await self._keep_up()

    async def broadcast_bytes(
        self, data: bytes, room: str | None = None, exclude: WebSocket | None = None
    ) -> None:
        self._registry.broadcast_bytes(data, room, exclude)
        await self._keep_up()

    async def send_to(self, connection_id: int, message: str | bytes) -> bool:
        """Send to the member with this id. Without a backend: False when no such member
        is here. With one, an id made by another process is published to that process
        and True is returned (delivery across processes is at most once)."""
        sent = self._send_to(connection_id, message)
        await self._keep_up()
        return sent

    async def _keep_up(self) -> None:
        """Backpressure on publishers: past the backlog limit, wait until the fan-out has
        caught up to half of it. The usual case is one integer read."""
        if self._registry.backlog() <= self._backlog_limit:
            return
        await self._catch_up.wait()

    def _send_to(self, connection_id: int, message: str | bytes) -> bool:
        if isinstance(message, str):
            return self._registry.send_text_to(connection_id, message)
        return self._registry.send_bytes_to(connection_id, message)

    def join(self, websocket: WebSocket, room: str) -> None:
        self._backend.ensure_started()
        self._registry.join(websocket, room)
        self._sockets[websocket.id] = websocket

    def leave(self, websocket: WebSocket, room: str) -> None:
        self._registry.leave(websocket, room)

    def rooms(self) -> list[str]:
        return self._registry.rooms()

    def members(self, room: str) -> list[int]:
        """The connection ids in ``room`` in this process (``cluster_members`` asks all)."""
        return self._registry.members(room)

    @property
    def active_connections(self) -> list[WebSocket]:
        """The registered sockets still open, as in the docs' class."""
        return [ws for ws in list(self._sockets.values()) if ws in self._registry]

    def stats(self) -> dict[str, int | str]:
        """This process's counters: ``members``, ``broadcasts``, ``delivered``, ``dropped``,
        ``closed_slow`` and ``backlog`` (bytes waiting for the fan-out); with a backend
        also ``published``, ``received``, ``publish_dropped``, ``reconnects``,
        ``malformed``, ``publish_queue`` (bytes) and ``backend_state``."""
        return self._registry.stats()

    # ---- across processes ----

    @property
    def backend_state(self) -> str | None:
        """``"connecting"``, ``"connected"`` or ``"down"``; None without a backend."""
        return self._registry.backend_state

    def on_backend_reconnect(self, hook: ReconnectHook) -> ReconnectHook:
        """Run ``await hook()`` each time the backend is connected again after losing
        Redis. Messages published meanwhile waited in the publish queue, but those past
        ``broadcast_publish_limit``, those in flight when the connection broke and those
        other processes published while this one was away are lost: resync here.
        Usable as a decorator."""
        self._backend.reconnect_hook = hook
        return hook

    async def cluster_count(self, room: str | None = None) -> int:
        """Members (of ``room``) on every live process; without a backend, here.
        Raises TimeoutError when a process does not answer within
        ``broadcast_presence_timeout``, ConnectionError when Redis is down."""
        values = await self._backend.query(False, room)
        return values[0] if values else 0

    async def cluster_members(self, room: str | None = None) -> list[int]:
        """The ids of the members (of ``room``) on every live process, sorted."""
        return await self._backend.query(True, room)

    def __len__(self) -> int:
        """Members in this process (``cluster_count`` counts all)."""
        return len(self._registry)

    def __contains__(self, websocket: WebSocket) -> bool:
        return websocket in self._registry


_live_managers: weakref.WeakSet[ConnectionManager] = weakref.WeakSet()
_server_settings: BackendSettings | None = None


def configure_backends(config: Config, loop: asyncio.AbstractEventLoop) -> None:
    """At server start: managers without ``backend=`` take the server's
    ``broadcast_backend``, and every backend starts connecting. Raises ValueError for a
    bad setting or two managers sharing a backend and a name."""
    global _server_settings
    _server_settings = BackendSettings.from_config(config)
    for manager in list(_live_managers):
        manager._backend.ensure_started(loop)


def stop_backends(loop: asyncio.AbstractEventLoop) -> None:
    """At server shutdown: stop watching the backends' notices on this loop."""
    for manager in list(_live_managers):
        manager._backend.detach(loop)
        manager._catch_up.detach(loop)


def live_managers() -> list[ConnectionManager]:
    """Every native manager this process still holds."""
    return list(_live_managers)


def partitioned_managers(config: Config) -> int:
    """How many live managers a ``--workers`` run would split between processes."""
    if config.broadcast_backend:
        return 0
    return sum(1 for m in list(_live_managers) if m._backend_url is None)


def _defaults() -> BackendSettings:
    if _server_settings is not None:
        return _server_settings
    return BackendSettings.from_config(Config.from_settings())


_claimed_names: weakref.WeakValueDictionary[tuple[str, str, str], ConnectionManager] = (
    weakref.WeakValueDictionary()
)


class _CatchUp:
    """Publishers waiting for a manager's fan-out to be half caught up: they share one
    future, resolved when the registry's eventfd says so (watched on the running loop)."""

    def __init__(self, registry: _engine.Registry) -> None:
        self._registry = registry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self.detach(self._loop)
            loop.add_reader(self._registry.backlog_fd(), self._caught_up)
            self._loop = loop
        while self._registry.await_backlog():
            if self._future is None or self._future.done():
                self._future = loop.create_future()
            # Shielded: one publisher cancelled must not cancel the others' wait.
            await asyncio.shield(self._future)

    def _caught_up(self) -> None:
        self._registry.backlog_drain()
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            if not loop.is_closed():
                loop.remove_reader(self._registry.backlog_fd())
            self._loop = None
            self._future = None


class _Backend:
    """One manager's side of its Redis link: starts it in the running loop, reads its
    notices (log lines, reconnects, query answers) there, and resolves queries."""

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = weakref.ref(manager)
        self._registry = manager._registry
        self.configured = False
        self.enabled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fd: int | None = None
        self.queries: dict[int, asyncio.Future[list[int]]] = {}
        self.reconnect_hook: ReconnectHook | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def _configure(self, manager: ConnectionManager) -> None:
        self.configured = True
        settings = _defaults()
        url = manager._backend_url or settings.url
        if url is None:
            return
        key = (url, settings.channel_prefix, manager.name)
        other = _claimed_names.get(key)
        if other is not None and other is not manager:
            self.configured = False
            raise ValueError(
                f"two ConnectionManagers named {manager.name!r} share the broadcast backend; "
                "give each its own name=..."
            )
        _claimed_names[key] = manager
        self._registry.set_backend(
            url,
            channel_prefix=settings.channel_prefix,
            name=manager.name,
            publish_limit=settings.publish_limit,
            presence_timeout=settings.presence_timeout,
        )
        self.enabled = True

    def ensure_started(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Configure once; start the link and watch its notices on the running loop."""
        manager = self._manager()
        if manager is None:
            return
        if not self.configured:
            self._configure(manager)
        if not self.enabled:
            return
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
        if loop is self.loop:
            return
        if self.loop is not None:
            self.detach(self.loop)
        self.fd = self._registry.start_backend()
        loop.add_reader(self.fd, self.drain)
        self.loop = loop

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop and self.fd is not None:
            if not loop.is_closed():
                loop.remove_reader(self.fd)
            self.loop = None

    def drain(self) -> None:
        for notice in self._registry.backend_drain():
            kind = notice[0]
            if kind == "log":
                logger.log(notice[1], "%s", notice[2])
            elif kind == "reconnected":
                self._run_hook()
            else:
                future = self.queries.pop(notice[1], None)
                if future is None or future.done():
                    continue
                if kind == "answer":
                    future.set_result(notice[2])
                elif kind == "timeout":
                    future.set_exception(TimeoutError(notice[2]))
                else:
                    future.set_exception(ConnectionError(notice[2]))

    def _run_hook(self) -> None:
        hook = self.reconnect_hook
        if hook is None:
            return

        async def call() -> None:
            try:
                await hook()
            except Exception:
                logger.exception("Exception in on_backend_reconnect hook")

        task = asyncio.ensure_future(call())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def query(self, members: bool, room: str | None) -> list[int]:
        self.ensure_started()
        if not self.enabled:
            manager = self._manager()
            if manager is None:
                return []
            if members:
                return sorted(ids_of(manager, room))
            return [len(ids_of(manager, room))]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self.queries[self._registry.cluster_query(members, room)] = future
        self.drain()  # an answer may be known at once (Redis down)
        return await future


def ids_of(manager: ConnectionManager, room: str | None) -> list[int]:
    if room is not None:
        return manager.members(room)
    return [ws.id for ws in manager.active_connections]
