"""Where a connection came from when a proxy stands in front of the server.

The server builds one ``Forwarding`` from the settings at start-up (``proxy_headers``,
``forwarded_allow_ips``, ``root_path``) and hands it to every ``Request`` and
``WebSocket``; each asks it once, on first use, for its ``Origin``: the client address and
scheme (``X-Forwarded-For`` and ``X-Forwarded-Proto`` when the TCP peer is a trusted
proxy, as uvicorn's proxy headers) and the path under ``root_path``. Which peers are
trusted and which client a chain of proxies names is the engine's ``TrustedProxies``, the
same rule the engine counts ``max_connections_per_ip`` by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ._engine import TrustedProxies

if TYPE_CHECKING:
    from .config import Config
    from .datastructures import Headers

# X-Forwarded-Proto's value → the scheme of an HTTP request and of a WebSocket.
_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class Source(Protocol):
    """What the engine says of a connection (its ``Connection`` and ``HttpRequest``)."""

    @property
    def client(self) -> tuple[str, int] | None: ...
    @property
    def scheme(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def server(self) -> tuple[str, int] | None: ...
    @property
    def path_params(self) -> dict[str, str]: ...


class Origin(NamedTuple):
    """A connection as the app sees it: the real client, the scheme the client used, and
    the full path (``root_path`` + the path routed). ``client`` is None for a peer on a
    Unix socket that no trusted proxy header names."""

    client: tuple[str, int] | None
    scheme: str
    root_path: str
    path: str

    @property
    def client_text(self) -> str:
        """The client as logs show it."""
        if self.client is None:
            return "unix socket"
        host, port = self.client
        return f"{host}:{port}"

    def scope(self, kind: str, source: Source, **extra: Any) -> dict[str, Any]:
        """The keys an ASGI scope of ``kind`` ("http", "websocket") shares, and ``extra``."""
        return {
            "type": kind,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "path": self.path,
            "query_string": source.query_string.encode("latin-1"),
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in source.headers
            ],
            "client": self.client,
            "server": source.server,
            **extra,
        }


@dataclass(frozen=True)
class Forwarding:
    """The proxy settings a server runs with; ``trusted`` None: proxy headers ignored."""

    trusted: TrustedProxies | None = None
    root_path: str = ""

    @classmethod
    def from_config(cls, config: Config) -> Forwarding:
        """Checks the settings (``ValueError`` naming a bad one)."""
        root_path = config.root_path
        if not isinstance(root_path, str) or (
            root_path and (not root_path.startswith("/") or root_path.endswith("/"))
        ):
            raise ValueError(
                f"root_path must be empty or start with '/' and not end with it, not {root_path!r}"
            )
        trusted = TrustedProxies(config.forwarded_allow_ips)
        return cls(trusted if config.proxy_headers else None, root_path)

    def origin(self, source: Source, headers: Headers, websocket: bool) -> Origin:
        client, scheme = source.client, source.scheme
        trusted = self.trusted
        if trusted is not None and (client[0] if client else None) in trusted:
            proto = headers.getlist("x-forwarded-proto")
            if proto:
                schemes = _WEBSOCKET_SCHEMES if websocket else _HTTP_SCHEMES
                scheme = schemes.get(proto[-1].strip().lower(), scheme)
            forwarded_for = headers.getlist("x-forwarded-for")
            if forwarded_for:
                host = trusted.client_host(",".join(forwarded_for))
                if host is not None:
                    client = (host, 0)  # the client's port is not forwarded
        return Origin(client, scheme, self.root_path, self.root_path + source.path)


NO_FORWARDING = Forwarding()
