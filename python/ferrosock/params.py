"""Markers that say where a handler parameter comes from, as FastAPI's.

Each works as a default (``token: str | None = Query(None)``) or inside ``Annotated``
(``token: Annotated[str | None, Query()] = None``). A default of ``...`` (the default)
means the value is required. Constraints (``gt``, ``ge``, ``lt``, ``le``, ``min_length``,
``max_length``, ``pattern``) are checked after conversion; ``title``, ``description``,
``examples``, ``deprecated`` and ``include_in_schema`` are documentation, kept as given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

DependencyScope = Literal["function", "request"]


class Param:
    """A value read from one part of the request: path, query, header or cookie."""

    source = ""

    def __init__(
        self,
        default: Any = ...,
        *,
        alias: str | None = None,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        title: str | None = None,
        description: str | None = None,
        examples: list[Any] | None = None,
        deprecated: bool | None = None,
        include_in_schema: bool = True,
    ) -> None:
        self.default = default
        self.alias = alias
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern
        self.title = title
        self.description = description
        self.examples = examples
        self.deprecated = deprecated
        self.include_in_schema = include_in_schema

    @property
    def required(self) -> bool:
        return self.default is ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if self.required else repr(self.default)})"


class Path(Param):
    source = "path"

    def __init__(self, default: Any = ..., **kwargs: Any) -> None:
        if default is not ...:
            raise ValueError("Path parameters cannot have a default value")
        super().__init__(default, **kwargs)


class Query(Param):
    source = "query"


class Header(Param):
    """With ``convert_underscores`` (the default) a parameter ``user_agent`` reads the
    ``user-agent`` header; header names are matched case-insensitively."""

    source = "header"

    def __init__(self, default: Any = ..., *, convert_underscores: bool = True, **kwargs: Any):
        super().__init__(default, **kwargs)
        self.convert_underscores = convert_underscores


class Cookie(Param):
    source = "cookie"


class Depends:
    """The parameter's value is what ``dependency`` returns for this request. Without a
    dependency, the parameter's annotation (a class) is called. With ``use_cache`` a
    dependency used several times in one request runs once. ``scope`` says when a
    generator dependency's code after ``yield`` runs: ``"function"`` once the endpoint has
    returned, ``"request"`` (the default) once the response has been sent or the WebSocket
    handler has finished."""

    def __init__(
        self,
        dependency: Callable[..., Any] | None = None,
        *,
        use_cache: bool = True,
        scope: DependencyScope | None = None,
    ) -> None:
        if scope is not None and scope not in get_args(DependencyScope):
            raise ValueError(f'Depends(scope=...) takes "function" or "request", got {scope!r}')
        self.dependency = dependency
        self.use_cache = use_cache
        self.scope = scope

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__name__", type(self.dependency).__name__)
        cache = "" if self.use_cache else ", use_cache=False"
        return f"{type(self).__name__}({name}{cache})"


class Security(Depends):
    """``Depends`` with the OAuth2 scopes the dependency requires (kept for porting;
    the scopes are recorded, not enforced)."""

    def __init__(
        self,
        dependency: Callable[..., Any] | None = None,
        *,
        scopes: Sequence[str] | None = None,
        use_cache: bool = True,
        scope: DependencyScope | None = None,
    ) -> None:
        super().__init__(dependency, use_cache=use_cache, scope=scope)
        self.scopes = list(scopes or [])
