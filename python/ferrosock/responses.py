"""Responses for HTTP routes, named and shaped as Starlette's.

A response is plain data the server sends as is: ``status_code``, ``body`` (bytes) and
``raw_headers``. The engine adds ``content-length`` itself, so it is never set here.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .datastructures import Headers


class Response:
    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = self.render(content)
        self.raw_headers = self._build_raw_headers(headers)

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, (bytes, bytearray, memoryview)):
            return bytes(content)
        return str(content).encode(self.charset)

    @property
    def headers(self) -> Headers:
        return Headers(self.raw_headers)

    def _build_raw_headers(self, headers: Mapping[str, str] | None) -> list[tuple[str, str]]:
        raw = [(name.lower(), value) for name, value in (headers or {}).items()]
        has_content_type = any(name == "content-type" for name, _ in raw)
        if self.media_type is not None and not has_content_type:
            content_type = self.media_type
            if content_type.startswith("text/") and "charset=" not in content_type.lower():
                content_type += f"; charset={self.charset}"
            raw.append(("content-type", content_type))
        return raw

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, body={self.body[:60]!r})"


class HTMLResponse(Response):
    media_type = "text/html"


class PlainTextResponse(Response):
    media_type = "text/plain"


class JSONResponse(Response):
    """Compact JSON (no spaces), UTF-8 kept as is. Values the standard library cannot
    encode but FastAPI returns as JSON (UUID, datetimes, Decimal, Enum, sets, dataclasses,
    objects with ``model_dump``) are converted as FastAPI does."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content,
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
            default=_json_default,
        ).encode("utf-8")


class RedirectResponse(Response):
    def __init__(
        self,
        url: str,
        status_code: int = 307,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content=b"", status_code=status_code, headers=headers)
        self.raw_headers.append(("location", quote(str(url), safe=":/%#?=@[]!$&'()*+,;")))


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        # As FastAPI: a whole number stays an integer, anything else becomes a float.
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
