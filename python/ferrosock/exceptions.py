"""Exceptions users catch and raise, named and shaped as in Starlette/FastAPI."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

ExceptionHandler = Callable[[Any, Any], Any]
ExceptionHandlers = Mapping[Any, ExceptionHandler]


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


class ValidationException(Exception):
    """Parameters that are missing or did not convert; ``errors()`` lists them in FastAPI's
    shape (``type``, ``loc``, ``msg``, ``input``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self._errors = errors

    def errors(self) -> list[dict[str, Any]]:
        return self._errors

    def __str__(self) -> str:
        count = len(self._errors)
        lines = [f"{count} validation error{'s' if count != 1 else ''}:"]
        lines += [f"  {error}" for error in self._errors]
        return "\n".join(lines)


class RequestValidationError(ValidationException):
    """An HTTP request's parameters did not convert: answered 422 by default."""

    def __init__(self, errors: list[dict[str, Any]], *, body: Any = None) -> None:
        super().__init__(errors)
        self.body = body


class WebSocketRequestValidationError(ValidationException):
    """A handshake's parameters did not convert: refused with 1008 by default."""


class FastAPIError(RuntimeError):
    """A misuse of the framework found when the app is built."""


class DependencyScopeError(FastAPIError):
    """A dependency depends on one whose scope ends before its own (FastAPI's)."""


def lookup_exception_handler(
    handlers: ExceptionHandlers, exc: BaseException
) -> ExceptionHandler | None:
    """The handler registered for ``exc``, as Starlette's ``ExceptionMiddleware`` finds it:
    for an ``HTTPException`` its status code first, then the exception's classes from the
    most specific. Handlers for ``Exception`` and 500 are for unexpected errors
    (``server_error_handler``), not looked up here."""
    if isinstance(exc, HTTPException):
        handler = handlers.get(exc.status_code)
        if handler is not None:
            return handler
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def server_error_handler(handlers: ExceptionHandlers) -> ExceptionHandler | None:
    """The handler for an unexpected exception: registered for 500 or ``Exception``."""
    return handlers.get(500) or handlers.get(Exception)


async def call_exception_handler(handler: ExceptionHandler, connection: Any, exc: Any) -> Any:
    result = handler(connection, exc)
    if inspect.isawaitable(result):
        result = await result
    return result
