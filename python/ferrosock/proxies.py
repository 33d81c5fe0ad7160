"""Where a connection came from when a proxy stands in front of the server.

The server builds one ``Forwarding`` from the settings at start-up (``proxy_headers``,
``forwarded_allow_ips``, ``root_path``) and hands it to every ``Request`` and
``WebSocket``; each asks it once, on first use, for its ``Origin``: the client address and
scheme (``X-Forwarded-For`` and ``X-Forwarded-Proto`` when the TCP peer is a trusted
proxy, as uvicorn's proxy headers) and the path under ``root_path``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .config import Config
    from .datastructures import Headers

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# X-Forwarded-Proto's value → the scheme of an HTTP request and of a WebSocket.
_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return address


class TrustedProxies:
    """``forwarded_allow_ips`` parsed: comma-separated addresses and CIDR networks, ``*``
    for any; anything else is a ``ValueError`` naming the setting."""

    def __init__(self, spec: str) -> None:
        if not isinstance(spec, str):
            raise ValueError(f"forwarded_allow_ips must be a string, not {spec!r}")
        self.any = False
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.any = True
                continue
            try:
                if "/" in item:
                    self.networks.append(ipaddress.ip_network(item))
                else:
                    self.addresses.add(ipaddress.ip_address(item))
            except ValueError as error:
                why = f" ({error})" if "/" in item else ""
                raise ValueError(
                    f"forwarded_allow_ips: {item!r} is not an IP address or network{why}; "
                    "give comma-separated addresses or CIDR networks, or '*' for any"
                ) from None
        self._exact = {str(address) for address in self.addresses}

    def __contains__(self, host: object) -> bool:
        if self.any:
            return True
        if not isinstance(host, str):
            return False
        if host in self._exact:
            return True
        if not self.networks and ":" not in host:
            return False  # an IPv4 address is written one way only: the set decides
        address = _address(host)
        if address is None:
            return False
        return address in self.addresses or any(address in net for net in self.networks)

    def client_host(self, forwarded_for: str) -> str | None:
        """The client an ``X-Forwarded-For`` value names: each proxy appends the address it
        got the request from, so the rightmost address that is not a trusted proxy; the
        leftmost when every one is trusted; None when it names none."""
        hosts = [host for host in (part.strip() for part in forwarded_for.split(",")) if host]
        for host in reversed(hosts):
            if host not in self:
                return host
        return hosts[0] if hosts else None


class Source(Protocol):
    """What the engine says of a connection (its ``Connection`` and ``HttpRequest``)."""

    @property
    def client(self) -> tuple[str, int]: ...
    @property
    def scheme(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def server(self) -> tuple[str, int]: ...


class Origin(NamedTuple):
    """A connection as the app sees it: the real client, the scheme the client used, and
    the full path (``root_path`` + the path routed)."""

    client: tuple[str, int]
    scheme: str
    root_path: str
    path: str

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
        if trusted is not None and client[0] in trusted:
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
