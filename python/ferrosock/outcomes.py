"""How each endpoint run ended, for an observer in the same process (``TestClient``).

The server reports through ``endpoint_observer``, a context variable the observer sets in
the context the handlers run in; when it is unset, reporting costs one lookup. Nothing in
serving depends on it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Refusal:
    """The app answered a handshake with an HTTP response instead of the upgrade:
    ``close(code, reason)`` before ``accept`` (HTTP 403, ``code`` and ``reason`` as given)
    or ``send_denial_response`` (its status, ``code`` is ``None``)."""

    status_code: int
    code: int | None = None
    reason: str = ""

    @property
    def is_denial_response(self) -> bool:
        return self.code is None


class EndpointObserver(Protocol):
    def ended(self, connection: Any, exception: BaseException | None) -> None:
        """The endpoint finished, cleanly or with the exception that escaped it."""

    def refused(self, connection: Any, refusal: Refusal) -> None:
        """The handshake is being refused; called before the response is sent."""


endpoint_observer: ContextVar[EndpointObserver | None] = ContextVar(
    "endpoint_observer", default=None
)


def report_end(connection: Any, exception: BaseException | None) -> None:
    observer = endpoint_observer.get()
    if observer is not None:
        observer.ended(connection, exception)


def report_refusal(connection: Any, refusal: Refusal) -> None:
    observer = endpoint_observer.get()
    if observer is not None:
        observer.refused(connection, refusal)
