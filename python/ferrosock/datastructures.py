"""Read-only views of a request's parts: headers, query string, URL, client address,
cookies, and the ``State`` attribute bag. Shaped like Starlette's, with ``str`` pairs
instead of ``bytes`` because the engine hands headers over already decoded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from http.cookies import _unquote
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Address(NamedTuple):
    """The peer's (or the server's) socket address."""

    host: str
    port: int


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only headers. ``headers[name]`` is the first value sent;
    ``getlist(name)`` gives every value in order; ``raw`` is the list as received."""

    __slots__ = ("_lowered", "_raw")

    def __init__(self, raw: list[tuple[str, str]] | None = None) -> None:
        self._raw: list[tuple[str, str]] = list(raw) if raw else []
        self._lowered = [(name.lower(), value) for name, value in self._raw]

    @property
    def raw(self) -> list[tuple[str, str]]:
        return list(self._raw)

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self._lowered:
            if key == wanted:
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        wanted = name.lower()
        return any(key == wanted for key, _ in self._lowered)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._lowered)

    def keys(self) -> list[str]:  # type: ignore[override]
        return [key for key, _ in self._lowered]

    def values(self) -> list[str]:  # type: ignore[override]
        return [value for _, value in self._lowered]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self._lowered)

    def getlist(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._lowered if key == wanted]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return sorted(self._lowered) == sorted(other._lowered)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw!r})"


class QueryParams(Mapping[str, str]):
    """The parsed query string. ``params[name]`` is the last value given, as in
    Starlette; ``getlist(name)`` gives them all; ``multi_items()`` every pair in order."""

    __slots__ = ("_items", "_last")

    def __init__(self, query_string: str = "") -> None:
        self._items: list[tuple[str, str]] = parse_qsl(query_string, keep_blank_values=True)
        self._last: dict[str, str] = dict(self._items)

    def __getitem__(self, name: str) -> str:
        return self._last[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._items if key == name]

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __str__(self) -> str:
        return urlencode(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryParams):
            return NotImplemented
        return sorted(self._items) == sorted(other._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class URL:
    """A parsed URL: ``scheme``, ``netloc``, ``hostname``, ``port``, ``path``, ``query``,
    ``fragment``; ``str(url)`` gives it back."""

    __slots__ = ("_parts", "_url")

    def __init__(self, url: str = "") -> None:
        self._url = url
        self._parts = urlsplit(url)

    @classmethod
    def from_parts(
        cls,
        scheme: str,
        headers: Headers,
        server: tuple[str, int] | None,
        path: str,
        query_string: str = "",
    ) -> URL:
        """The URL a client asked for: the ``Host`` header if it sent one, else the
        server's own address (its port left out when it is the scheme's default); just the
        path when there is neither (a Unix socket has no address)."""
        host = headers.get("host")
        if host is None:
            if server is None:
                return cls(f"{path}?{query_string}" if query_string else path)
            server_host, server_port = server
            host = server_host
            if _DEFAULT_PORTS.get(scheme) != server_port:
                host = f"{server_host}:{server_port}"
        url = f"{scheme}://{host}{path}"
        if query_string:
            url = f"{url}?{query_string}"
        return cls(url)

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def netloc(self) -> str:
        return self._parts.netloc

    @property
    def hostname(self) -> str | None:
        return self._parts.hostname

    @property
    def port(self) -> int | None:
        return self._parts.port

    @property
    def path(self) -> str:
        return self._parts.path

    @property
    def query(self) -> str:
        return self._parts.query

    @property
    def fragment(self) -> str:
        return self._parts.fragment

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")

    def __str__(self) -> str:
        return self._url

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, URL)):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url!r})"


class State:
    """An attribute bag: ``app.state.db = ...``, ``request.state.user = ...``."""

    _state: dict[str, Any]

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", dict(state) if state else {})

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state[name]
        except KeyError:
            message = f"'{type(self).__name__}' object has no attribute '{name}'"
            raise AttributeError(message) from None

    def __delattr__(self, name: str) -> None:
        try:
            del self._state[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state!r})"


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header into ``{name: value}`` the way browsers send it (and the
    way Starlette reads it): ``;``-separated pairs, values unquoted, later names win."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        if "=" in chunk:
            name, value = chunk.split("=", 1)
        else:
            # A bare value, as some clients send; Starlette keeps it under "".
            name, value = "", chunk
        name, value = name.strip(), value.strip()
        if name or value:
            cookies[name] = _unquote(value)
    return cookies
