"""``TestClient``: drive an app through the real engine, as Starlette's test client does.

The app is served on a free loopback port by a server running in a background thread
(started by ``with TestClient(app)``, or on the first request, and stopped by ``close()``,
the end of the ``with`` block, or at interpreter exit). Requests go over real sockets:
HTTP with ``http.client``, WebSockets with the ``websockets`` library's sync client.
Every wait is bounded by ``timeout`` (5 s by default), so a test never hangs.

With ``raise_server_exceptions`` (the default) an exception that escaped an endpoint is
raised in the test: from the HTTP call that got the 500, from the ``websocket_connect``
whose handshake failed before ``accept``, from the ``receive_*`` that saw the 1011 close, or
when the ``websocket_connect`` block ends (including the ``WebSocketDisconnect`` an
endpoint let escape after the client closed), so FastAPI's tests port with their imports
changed. A handshake the app refused raises ``WebSocketDisconnect`` with the app's code and
reason (1000 for a path with no WebSocket route, as Starlette's router), one it answered
with ``send_denial_response`` raises ``WebSocketDenialResponse``. Each handler runs in a
copy of the ``contextvars`` context of the test code that made the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http.client
import json as json_module
import socket
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from .datastructures import Headers
from .exceptions import WebSocketDisconnect
from .outcomes import Refusal, endpoint_observer

DEFAULT_TIMEOUT = 5.0
SERVER_START_TIMEOUT = 30.0
MAX_REDIRECTS = 20
USER_AGENT = "testclient"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]]

# Headers of a 101 response that the handshake itself sets, not the app's ``accept``.
_HANDSHAKE_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "date"}
)


class _EndpointOutcomes:
    """How each endpoint run ended, and the handshakes refused, keyed by the client's port
    (each test connection has its own), and the context each connection's handler runs in.
    Written on the server's thread, read on the test's."""

    def __init__(self) -> None:
        self._finished = threading.Condition()
        self._by_port: dict[int, BaseException | None] = {}
        self._refusals: dict[int, Refusal] = {}
        self._contexts: dict[int, contextvars.Context] = {}

    def ended(self, connection: Any, exception: BaseException | None) -> None:
        client = getattr(connection, "client", None)
        if not client:
            return
        with self._finished:
            self._by_port[client[1]] = exception
            self._finished.notify_all()

    def refused(self, connection: Any, refusal: Refusal) -> None:
        with self._finished:
            self._refusals[connection.client[1]] = refusal

    def take_refusal(self, port: int) -> Refusal | None:
        with self._finished:
            return self._refusals.pop(port, None)

    def bind_context(self, port: int) -> None:
        """Run the handler of the connection from ``port`` in a copy of this thread's
        context, as Starlette's test client does."""
        context = contextvars.copy_context()
        context.run(endpoint_observer.set, self)
        with self._finished:
            self._contexts[port] = context

    def context_for(self, client: tuple[str, int] | None) -> contextvars.Context | None:
        if client is None:
            return None
        with self._finished:
            return self._contexts.pop(client[1], None)

    def drop_context(self, port: int) -> None:
        """The connection from ``port`` is over; a context no handler took (the engine
        answered alone, as for an unknown path) is not kept."""
        with self._finished:
            self._contexts.pop(port, None)

    def forget(self, port: int) -> None:
        with self._finished:
            self._by_port.pop(port, None)
            self._refusals.pop(port, None)
            self._contexts.pop(port, None)

    def take_exception(self, port: int, wait: float) -> BaseException | None:
        """The exception the endpoint serving ``port`` ended with, waiting up to ``wait``
        seconds for it to end; ``None`` if it ended cleanly or is still running."""
        with self._finished:
            self._finished.wait_for(lambda: port in self._by_port, timeout=wait)
            return self._by_port.pop(port, None)


class _ServerThread:
    """The real server, serving ``app`` from a daemon thread on a free loopback port."""

    def __init__(self, app: Any, outcomes: _EndpointOutcomes) -> None:
        from .config import Config
        from .server import Server

        self.outcomes = outcomes
        # The app's own settings apply (message size limits, heartbeat ...), on a free
        # loopback port, in this one process. No `server` header, as Starlette's client
        # sees none: the headers a test reads are the app's.
        loopback = {
            "host": "127.0.0.1",
            "port": 0,
            "fd": None,
            "uds": None,
            "workers": 1,
            "log_level": "warning",
            "server_header": False,
        }
        config = Config.from_settings(getattr(app, "settings", {}), loopback)
        self.server = Server(app, config)
        self.server.context_for = outcomes.context_for
        self.thread = threading.Thread(target=self._serve, name="ferrosock-testclient", daemon=True)

    def start(self) -> int:
        self.thread.start()
        if not self.server.started.wait(SERVER_START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"the test server did not start within {SERVER_START_TIMEOUT} s")
        if self.server.error is not None:
            self.thread.join(DEFAULT_TIMEOUT)
            raise self.server.error
        assert self.server.port is not None
        return self.server.port

    def _serve(self) -> None:
        # Set before the loop starts, so every task inherits it (handlers of connections
        # the test client did not make included).
        endpoint_observer.set(self.outcomes)
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:
            if exc is not self.server.error:
                raise
            # Reported through ``server.error``: raised by ``start`` or seen as a dead port.

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.request_shutdown()
            self.thread.join(SERVER_START_TIMEOUT)


class ClientResponse:
    """An HTTP response as the test sees it (the parts of ``httpx.Response`` tests use)."""

    def __init__(
        self, url: str, status_code: int, reason_phrase: str, headers: Headers, content: bytes
    ) -> None:
        self.url = url
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    @property
    def encoding(self) -> str:
        content_type = self.headers.get("content-type", "")
        for part in content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json_module.loads(self.content)

    def __repr__(self) -> str:
        return f"<ClientResponse [{self.status_code} {self.reason_phrase}]>"


class TestClient:
    __test__ = False  # not a test class, despite its name

    def __init__(
        self,
        app: Any,
        base_url: str = "http://testserver",
        *,
        cookies: Mapping[str, str] | None = None,
        raise_server_exceptions: bool = True,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.cookies: dict[str, str] = dict(cookies or {})
        self.headers: dict[str, str] = {"user-agent": USER_AGENT, **(headers or {})}
        self.raise_server_exceptions = raise_server_exceptions
        self.follow_redirects = follow_redirects
        self.timeout = timeout
        self._outcomes = _EndpointOutcomes()
        self._server: _ServerThread | None = None
        self._port: int | None = None
        self._start_lock = threading.Lock()
        self._stop_server: Callable[[], Any] | None = None

    # -- Life cycle -----------------------------------------------------------------------

    def __enter__(self) -> TestClient:
        self._ensure_started()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the server down gracefully (the app's lifespan ends); idempotent."""
        if self._stop_server is not None:
            self._stop_server()

    def _ensure_started(self) -> int:
        with self._start_lock:
            if self._port is None:
                server = _ServerThread(self.app, self._outcomes)
                self._port = server.start()
                self._server = server
                # Stops the server when the client is collected or the interpreter exits.
                self._stop_server = weakref.finalize(self, server.stop)
            return self._port

    @property
    def port(self) -> int:
        """The loopback port the server listens on (starting it if needed)."""
        return self._ensure_started()

    # -- HTTP -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        content: str | bytes | None = None,
        follow_redirects: bool | None = None,
    ) -> ClientResponse:
        body, content_type = _encode_body(json, data, content)
        request_headers = self._request_headers(headers, cookies)
        if content_type is not None:
            request_headers.setdefault("content-type", content_type)
        target = self._full_url(url, params)
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        method = method.upper()
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_http(method, target, request_headers, body)
            location = response.headers.get("location")
            if not (follow and response.status_code in _REDIRECT_STATUSES and location):
                return response
            target = urljoin(target, location)
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, body = "GET", None
                request_headers.pop("content-type", None)
        raise RuntimeError(f"more than {MAX_REDIRECTS} redirects, last to {target}")

    def get(self, url: str, **options: Any) -> ClientResponse:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> ClientResponse:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Any) -> ClientResponse:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Any) -> ClientResponse:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options: Any) -> ClientResponse:
        return self.request("DELETE", url, **options)

    def head(self, url: str, **options: Any) -> ClientResponse:
        return self.request("HEAD", url, **options)

    def options(self, url: str, **options: Any) -> ClientResponse:
        return self.request("OPTIONS", url, **options)

    def _send_http(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> ClientResponse:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.connect()
            client_port = connection.sock.getsockname()[1]
            self._outcomes.forget(client_port)
            self._outcomes.bind_context(client_port)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request(method, path, body=body, headers={"host": parts.netloc, **headers})
            raw = connection.getresponse()
            response = ClientResponse(
                url, raw.status, raw.reason, Headers(raw.getheaders()), raw.read()
            )
        finally:
            connection.close()
        self._outcomes.drop_context(client_port)
        self._store_cookies(response.headers)
        failed = response.status_code >= 500
        self._raise_server_exception(client_port, wait=1.0 if failed else 0.0)
        return response

    def _full_url(self, url: str, params: Any) -> str:
        if "://" not in url:
            url = f"{self.base_url}/{url.lstrip('/')}"
        if params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(params, doseq=True)
        return url

    def _request_headers(
        self, headers: HeaderInput | None, cookies: Mapping[str, str] | None
    ) -> dict[str, str]:
        merged = {name.lower(): value for name, value in self.headers.items()}
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
        merged.update((name.lower(), value) for name, value in pairs)
        all_cookies = {**self.cookies, **(cookies or {})}
        if all_cookies and "cookie" not in merged:
            merged["cookie"] = "; ".join(f"{name}={value}" for name, value in all_cookies.items())
        return merged

    def _store_cookies(self, headers: Headers) -> None:
        for header in headers.getlist("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] in ("0", "-1") or (morsel["expires"] and not morsel.value):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _raise_server_exception(self, client_port: int, wait: float) -> None:
        exception = self._outcomes.take_exception(client_port, wait)
        if exception is not None and self.raise_server_exceptions:
            raise exception

    # -- WebSocket ------------------------------------------------------------------------

    def websocket_connect(
        self,
        url: str,
        subprotocols: Sequence[str] | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> WebSocketTestSession:
        """``with client.websocket_connect("/ws") as websocket:`` connects on entering
        (a refused handshake raises ``WebSocketDisconnect`` with the app's code and reason)
        and closes with 1000 on leaving."""
        target = urlsplit(self._full_url(url, params))
        ws_url = target._replace(scheme="wss" if target.scheme == "https" else "ws").geturl()
        request_headers = self._request_headers(headers, cookies)
        return WebSocketTestSession(self, ws_url, list(subprotocols or []), request_headers)


class WebSocketTestSession:
    """One WebSocket connection of a test, as Starlette's test session."""

    def __init__(
        self, client: TestClient, url: str, subprotocols: list[str], headers: dict[str, str]
    ) -> None:
        self._client = client
        self._url = url
        self._subprotocols = subprotocols
        # The websockets client writes the user-agent header itself.
        self._user_agent = headers.pop("user-agent", USER_AGENT)
        self._headers = headers
        self._connection: Any = None
        self._exit_stack = contextlib.ExitStack()
        self._client_port = 0
        self._server_exception_seen = False

    @property
    def accepted_subprotocol(self) -> str | None:
        subprotocol: str | None = self._connection.subprotocol
        return subprotocol

    def __enter__(self) -> WebSocketTestSession:
        client_library = _import_websockets()
        client = self._client
        sock = socket.create_connection(("127.0.0.1", client.port), timeout=client.timeout)
        self._client_port = sock.getsockname()[1]
        client._outcomes.forget(self._client_port)
        client._outcomes.bind_context(self._client_port)
        self._exit_stack = contextlib.ExitStack()
        try:
            self._connection = self._exit_stack.enter_context(
                client_library.connect(
                    self._url,
                    sock=sock,
                    subprotocols=self._subprotocols or None,
                    additional_headers=self._headers,
                    user_agent_header=self._user_agent,
                    compression=None,
                    proxy=None,
                    open_timeout=client.timeout,
                    close_timeout=client.timeout,
                    ping_interval=None,
                    max_size=None,
                )
            )
        except client_library.InvalidStatus as exc:
            sock.close()
            self._raise_refusal(exc.response)
        return self

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers the app gave ``accept(headers=...)``, as Starlette's session."""
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self._connection.response.headers.raw_items()
            if name.lower() not in _HANDSHAKE_HEADERS
        ]

    def _raise_refusal(self, response: Any) -> None:
        outcomes = self._client._outcomes
        port = self._client_port
        status = response.status_code
        # Recorded before the server sent its response, so already here.
        refusal = outcomes.take_refusal(port)
        if refusal is not None and refusal.is_denial_response:
            outcomes.forget(port)
            raise WebSocketDenialResponse(
                self._url,
                status,
                response.reason_phrase,
                Headers(list(response.headers.raw_items())),
                response.body or b"",
            )
        if status >= 500:
            self._client._raise_server_exception(port, wait=1.0)
            raise WebSocketDisconnect(1011, f"handshake failed with HTTP {status}")
        outcomes.forget(port)
        if refusal is not None and refusal.code is not None:
            raise WebSocketDisconnect(refusal.code, refusal.reason)
        # Refused before any handler ran: no WebSocket route for the path.
        raise WebSocketDisconnect(1000, "")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(1000)
        self._exit_stack.close()
        self._client._outcomes.drop_context(self._client_port)
        if exc_type is None and not self._server_exception_seen:
            # Wait for the endpoint to finish, to raise what it let escape (Starlette does).
            self._client._raise_server_exception(self._client_port, wait=self._client.timeout)

    # -- Sending --------------------------------------------------------------------------

    def send_text(self, data: str) -> None:
        self._send(data)

    def send_bytes(self, data: bytes) -> None:
        self._send(bytes(data))

    def send_json(self, data: Any, mode: str = "text") -> None:
        text = json_module.dumps(data, separators=(",", ":"), ensure_ascii=False)
        self._send(text if mode == "text" else text.encode("utf-8"))

    def send(self, message: Mapping[str, Any]) -> None:
        """Send an ASGI-style message, as Starlette's session: ``{"type":
        "websocket.receive", "text": ...}`` (or ``"bytes"``), or ``{"type":
        "websocket.disconnect", "code": ..., "reason": ...}`` to close."""
        kind = message.get("type")
        if kind == "websocket.receive":
            if message.get("text") is not None:
                self._send(message["text"])
            elif message.get("bytes") is not None:
                self._send(bytes(message["bytes"]))
            else:
                raise ValueError('a "websocket.receive" message needs "text" or "bytes"')
        elif kind == "websocket.disconnect":
            self.close(message.get("code", 1000), message.get("reason"))
        else:
            raise ValueError(
                'send() takes a "websocket.receive" or "websocket.disconnect" message, '
                f"got type {kind!r}"
            )

    def _send(self, data: str | bytes) -> None:
        closed = _import_websockets().ConnectionClosed
        try:
            self._connection.send(data)
        except closed as exc:
            code, reason = _close_code_and_reason(exc)
            raise WebSocketDisconnect(code, reason) from None

    # -- Receiving ------------------------------------------------------------------------

    def receive(self) -> dict[str, Any]:
        """The next message as an ASGI-style dict: ``{"type": "websocket.send", "text": ...}``
        (or ``"bytes"``), or ``{"type": "websocket.close", "code": ..., "reason": ...}``."""
        closed = _import_websockets().ConnectionClosed
        timeout = self._client.timeout
        try:
            data = self._connection.recv(timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"no message from the server within {timeout} s") from None
        except closed as exc:
            code, reason = _close_code_and_reason(exc)
            if code == 1011:
                self._server_exception_seen = True
                self._client._raise_server_exception(self._client_port, wait=1.0)
            return {"type": "websocket.close", "code": code, "reason": reason}
        if isinstance(data, str):
            return {"type": "websocket.send", "text": data}
        return {"type": "websocket.send", "bytes": data}

    def receive_text(self) -> str:
        text: str = self._receive_data("text")
        return text

    def receive_bytes(self) -> bytes:
        data: bytes = self._receive_data("bytes")
        return data

    def receive_json(self, mode: str = "text") -> Any:
        if mode == "text":
            return json_module.loads(self.receive_text())
        return json_module.loads(self.receive_bytes().decode("utf-8"))

    def _receive_data(self, kind: str) -> Any:
        message = self.receive()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message["code"], message["reason"])
        if kind not in message:
            other = "binary" if kind == "text" else "text"
            raise TypeError(f"expected a {kind} message, the server sent a {other} one")
        return message[kind]

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self._connection is not None:
            self._connection.close(code, reason or "")


class WebSocketDenialResponse(ClientResponse, WebSocketDisconnect):
    """The app answered the handshake with ``send_denial_response``: this is that HTTP
    response (``status_code``, ``headers``, ``content``), raised by ``websocket_connect``."""

    def __str__(self) -> str:
        return f"the WebSocket handshake was denied with HTTP {self.status_code}"


def _close_code_and_reason(exc: Any) -> tuple[int, str]:
    """The close frame the server sent; 1006 when the connection dropped without one."""
    if exc.rcvd is None:
        return 1006, ""
    return int(exc.rcvd.code), exc.rcvd.reason


def _encode_body(
    json: Any, data: Any, content: str | bytes | None
) -> tuple[bytes | None, str | None]:
    if json is not None:
        text = json_module.dumps(json, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8"), "application/json"
    if isinstance(data, Mapping):
        return urlencode(data, doseq=True).encode("ascii"), "application/x-www-form-urlencoded"
    raw = content if content is not None else data
    if raw is None:
        return None, None
    return (raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)), None


class _WebSocketsLibrary:
    """The parts of the ``websockets`` package the test client uses, imported on first use."""

    def __init__(self) -> None:
        try:
            from websockets.exceptions import ConnectionClosed, InvalidStatus
            from websockets.sync.client import connect
        except ImportError as exc:
            raise ImportError(
                "TestClient.websocket_connect needs the 'websockets' package: "
                "pip install websockets"
            ) from exc
        self.connect: Callable[..., Any] = connect
        self.ConnectionClosed = ConnectionClosed
        self.InvalidStatus = InvalidStatus


_websockets_library: _WebSocketsLibrary | None = None


def _import_websockets() -> _WebSocketsLibrary:
    global _websockets_library
    if _websockets_library is None:
        _websockets_library = _WebSocketsLibrary()
    return _websockets_library
