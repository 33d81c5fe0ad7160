"""Exceptions users catch and raise, named and shaped as in Starlette/FastAPI."""

from __future__ import annotations

from typing import Any


class WebSocketDisconnect(Exception):
    """The connection has ended: the peer closed, the network dropped, a heartbeat timed
    out, or the server closed it. ``code`` is the RFC 6455 close code."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class WebSocketException(Exception):
    """Raised by a handler or a dependency: before ``accept()`` the handshake is refused
    (HTTP 403); after it, the socket is closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class HTTPException(Exception):
    """Raised by an HTTP handler or dependency to answer with ``status_code``."""

    def __init__(
        self, status_code: int, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.headers = headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"


class RequestValidationError(Exception):
    """A request's parameters did not convert; HTTP answers 422, WebSocket refuses."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors
