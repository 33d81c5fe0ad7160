"""Call plans: a handler's signature analysed once, at registration, into what each
parameter needs; per connection or request only the plan runs.

A parameter receives one of:

* the connection itself (annotated ``WebSocket`` in a websocket route, ``Request`` in an
  HTTP route);
* a value read from the path, the query string, a header or a cookie and converted by its
  annotation (``str``, ``int``, ``float``, ``bool``, ``uuid.UUID``, an ``Enum``, ``X | None``,
  unions of these, and ``list[X]`` for query and header values);
* what a dependency returns (``Depends``): sync or async functions, classes, callable
  objects, and generators whose code after ``yield`` runs once the handler has finished.

FastAPI's rules decide the source: a marker (``Query()``, ``Header()``, ``Depends()`` ...)
as default or in ``Annotated``; otherwise a name found in the path is a path parameter and
anything else a query parameter. Values that are missing or do not convert are collected
into FastAPI-shaped error dicts and raised together as ``RequestValidationError``.
A parameter that no request could ever satisfy raises ``TypeError`` at registration,
naming the function.
"""

from __future__ import annotations

import enum
import inspect
import operator
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, Union

from .exceptions import DependencyScopeError, RequestValidationError
from .params import DependencyScope, Depends, Header, Param, Path, Query
from .requests import Request
from .websockets import WebSocket

RouteKind = Literal["websocket", "http"]

# Marks a value that could not be produced; the reason is already in the error list.
_FAILED: Any = object()


# ---------------------------------------------------------------------------------------
# Converters: raw ``str`` -> typed value, or ``_Invalid`` with pydantic's error type.


class _Invalid(Exception):
    def __init__(self, error_type: str, message: str, ctx: dict[str, Any] | None = None):
        self.error_type = error_type
        self.message = message
        self.ctx = ctx


Converter = Callable[[str], Any]

_TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})


def _to_str(raw: str) -> str:
    return raw


def _to_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _Invalid(
            "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        ) from None


def _to_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise _Invalid(
            "float_parsing", "Input should be a valid number, unable to parse string as a number"
        ) from None


def _to_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")


def _to_uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise _Invalid("uuid_parsing", f"Input should be a valid UUID, {exc}") from None


def _enum_converter(enum_class: type[enum.Enum]) -> Converter:
    members = {str(member.value): member for member in enum_class}
    expected = _quoted_choices(list(members))

    def to_enum(raw: str) -> enum.Enum:
        try:
            return members[raw]
        except KeyError:
            raise _Invalid("enum", f"Input should be {expected}", {"expected": expected}) from None

    return to_enum


def _quoted_choices(choices: list[str]) -> str:
    quoted = [f"'{choice}'" for choice in choices]
    if len(quoted) < 2:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def _union_converter(converters: list[Converter]) -> Converter:
    def to_first_that_fits(raw: str) -> Any:
        first_error: _Invalid | None = None
        for convert in converters:
            try:
                return convert(raw)
            except _Invalid as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    return to_first_that_fits


_SCALAR_CONVERTERS: dict[Any, Converter] = {
    str: _to_str,
    Any: _to_str,
    inspect.Parameter.empty: _to_str,
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    uuid.UUID: _to_uuid,
}

_LIST_ORIGINS = (list, Sequence, typing.List)  # noqa: UP006 - the old alias is still seen


def _scalar_converter(annotation: Any) -> Converter | None:
    if annotation in _SCALAR_CONVERTERS:
        return _SCALAR_CONVERTERS[annotation]
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return _enum_converter(annotation)
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if str in members:
            # pydantic's smart union keeps a string as a string when ``str`` is a member.
            return _to_str
        converters = [_scalar_converter(member) for member in members]
        if any(convert is None for convert in converters):
            return None
        if len(converters) == 1:
            return converters[0]
        return _union_converter(typing.cast(list[Converter], converters))
    return None


def _list_item_type(annotation: Any) -> tuple[bool, Any]:
    """``(True, item type)`` for ``list[X]`` (also inside ``Optional``), else ``(False, _)``."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _list_item_type(members[0])
        return False, None
    if annotation is list or origin in _LIST_ORIGINS:
        args = typing.get_args(annotation)
        return True, (args[0] if args else str)
    return False, None


# ---------------------------------------------------------------------------------------
# Constraint checks from ``Query(gt=..., max_length=...)`` and friends.

Check = Callable[[Any], None]


_BOUNDS = (
    ("gt", operator.gt, "greater_than", "greater than"),
    ("ge", operator.ge, "greater_than_equal", "greater than or equal to"),
    ("lt", operator.lt, "less_than", "less than"),
    ("le", operator.le, "less_than_equal", "less than or equal to"),
)


def _constraint_checks(marker: Param, is_list: bool) -> tuple[Check, ...]:
    checks: list[Check] = []
    if not is_list:
        for key, holds, error_type, words in _BOUNDS:
            bound = getattr(marker, key)
            if bound is not None:
                checks.append(_bound_check(key, bound, holds, error_type, words))
    if marker.min_length is not None:
        checks.append(_length_check("min_length", marker.min_length, is_list))
    if marker.max_length is not None:
        checks.append(_length_check("max_length", marker.max_length, is_list))
    if marker.pattern is not None and not is_list:
        checks.append(_pattern_check(marker.pattern))
    return tuple(checks)


def _bound_check(
    key: str, bound: Any, holds: Callable[[Any, Any], bool], error_type: str, words: str
) -> Check:
    def check(value: Any) -> None:
        if not holds(value, bound):
            raise _Invalid(error_type, f"Input should be {words} {bound}", {key: bound})

    return check


def _length_check(key: Literal["min_length", "max_length"], limit: int, is_list: bool) -> Check:
    is_minimum = key == "min_length"
    noun, unit = ("List", "item") if is_list else ("String", "character")
    error_type = ("too" if is_list else "string_too") + ("_short" if is_minimum else "_long")
    plural = "" if limit == 1 else "s"
    message = f"{noun} should have {'at least' if is_minimum else 'at most'} {limit} {unit}{plural}"

    def check(value: Any) -> None:
        length = len(value)
        if length < limit if is_minimum else length > limit:
            raise _Invalid(error_type, message, {key: limit})

    return check


def _pattern_check(pattern: str) -> Check:
    compiled = re.compile(pattern)

    def check(value: Any) -> None:
        if isinstance(value, str) and compiled.search(value) is None:
            raise _Invalid(
                "string_pattern_mismatch",
                f"String should match pattern '{pattern}'",
                {"pattern": pattern},
            )

    return check


# ---------------------------------------------------------------------------------------
# The plan.


class SolveContext:
    """One request's or connection's solving state: the dependency cache, the errors
    found so far, and (made on first need) the exit stacks of generator dependencies, one
    per scope (FastAPI's): ``"function"`` ends when the endpoint has returned
    (``end_function_scope``), ``"request"`` (the default) when the response has been sent
    or the WebSocket handler has finished. Use as ``async with``: leaving it runs whatever
    clean-up is left, function scope first, each in reverse order."""

    __slots__ = ("_function_stack", "_request_stack", "cache", "connection", "errors", "overrides")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.overrides: Mapping[Callable[..., Any], Callable[..., Any]] = (
            getattr(connection.app, "dependency_overrides", None) or {}
        )
        self.cache: dict[Callable[..., Any], Any] = {}
        self.errors: list[dict[str, Any]] = []
        self._function_stack: AsyncExitStack | None = None
        self._request_stack: AsyncExitStack | None = None

    def exit_stack(self, scope: DependencyScope | None) -> AsyncExitStack:
        if scope == "function":
            if self._function_stack is None:
                self._function_stack = AsyncExitStack()
            return self._function_stack
        if self._request_stack is None:
            self._request_stack = AsyncExitStack()
        return self._request_stack

    async def end_function_scope(self, *exc_info: Any) -> bool:
        """Run the clean-up of ``"function"``-scoped dependencies; true if it suppressed
        the exception given."""
        stack, self._function_stack = self._function_stack, None
        if stack is None:
            return False
        return bool(await stack.__aexit__(*(exc_info or (None, None, None))))

    async def __aenter__(self) -> SolveContext:
        return self

    async def __aexit__(self, *exc_info: Any) -> bool:
        suppressed = await self.end_function_scope(*exc_info)
        if suppressed:
            exc_info = (None, None, None)
        stack, self._request_stack = self._request_stack, None
        if stack is None:
            return suppressed
        return bool(await stack.__aexit__(*exc_info)) or suppressed


@dataclass(frozen=True, slots=True)
class ValueParam:
    """A value read from the path, query string, headers or cookies, then converted."""

    name: str
    source: Literal["path", "query", "header", "cookie"]
    alias: str
    convert: Converter
    is_list: bool
    required: bool
    default: Any
    checks: tuple[Check, ...]

    def extract(self, ctx: SolveContext) -> Any:
        raw = self._read(ctx.connection)
        if raw is None or (self.is_list and not raw):
            if self.required:
                ctx.errors.append(self._error("missing", "Field required", None, None))
                return _FAILED
            return self.default
        if self.is_list:
            return self._convert_list(raw, ctx)
        try:
            value = self.convert(raw)
            for check in self.checks:
                check(value)
        except _Invalid as exc:
            ctx.errors.append(self._error(exc.error_type, exc.message, raw, exc.ctx))
            return _FAILED
        return value

    def _read(self, connection: Any) -> Any:
        if self.source == "path":
            value = connection.path_params.get(self.alias)
            # A convertor may have made it an int, float or UUID already.
            return value if value is None or isinstance(value, str) else str(value)
        if self.source == "cookie":
            return connection.cookies.get(self.alias)
        values = connection.query_params if self.source == "query" else connection.headers
        if self.is_list:
            return values.getlist(self.alias)
        if self.source == "query":
            return values.get(self.alias)
        # Headers: the first value sent, as Starlette's ``headers[name]``.
        found = values.getlist(self.alias)
        return found[0] if found else None

    def _convert_list(self, raw: list[str], ctx: SolveContext) -> Any:
        converted = []
        failed = False
        for index, item in enumerate(raw):
            try:
                converted.append(self.convert(item))
            except _Invalid as exc:
                ctx.errors.append(self._error(exc.error_type, exc.message, item, exc.ctx, index))
                failed = True
        if failed:
            return _FAILED
        try:
            for check in self.checks:
                check(converted)
        except _Invalid as exc:
            ctx.errors.append(self._error(exc.error_type, exc.message, raw, exc.ctx))
            return _FAILED
        return converted

    def _error(
        self,
        error_type: str,
        message: str,
        raw: Any,
        ctx: dict[str, Any] | None,
        index: int | None = None,
    ) -> dict[str, Any]:
        loc: tuple[str | int, ...] = (self.source, self.alias)
        if index is not None:
            loc += (index,)
        error: dict[str, Any] = {"type": error_type, "loc": loc, "msg": message, "input": raw}
        if ctx is not None:
            error["ctx"] = ctx
        return error


@dataclass(frozen=True, slots=True)
class DependencyParam:
    """A value produced by a dependency; ``name`` is ``None`` for dependencies that run
    only for their effect (``dependencies=[Depends(check)]``)."""

    name: str | None
    plan: CallPlan
    use_cache: bool
    scope: DependencyScope | None = None

    async def resolve(self, ctx: SolveContext) -> Any:
        original = self.plan.call
        plan = self.plan
        if ctx.overrides:
            override = ctx.overrides.get(original)
            if override is not None:
                plan = plan.builder.plan(override)
        if self.use_cache and original in ctx.cache:
            return ctx.cache[original]
        errors_before = len(ctx.errors)
        kwargs = await plan.solve(ctx)
        if len(ctx.errors) != errors_before:
            return _FAILED
        value = await plan.invoke(kwargs, ctx, self.scope)
        if self.use_cache:
            ctx.cache[original] = value
        return value


class CallPlan:
    """What calling ``call`` takes: its dependencies (solved first, in order), its values,
    and the names that receive the connection."""

    __slots__ = ("builder", "call", "connection_names", "dependencies", "invoke", "values")

    def __init__(
        self,
        call: Callable[..., Any],
        builder: PlanBuilder,
        dependencies: tuple[DependencyParam, ...],
        values: tuple[ValueParam, ...],
        connection_names: tuple[str, ...],
    ) -> None:
        self.call = call
        self.builder = builder
        self.dependencies = dependencies
        self.values = values
        self.connection_names = connection_names
        self.invoke = _invoker_for(call)

    async def solve(self, ctx: SolveContext) -> dict[str, Any]:
        """The keyword arguments for ``call``; problems are appended to ``ctx.errors``."""
        kwargs: dict[str, Any] = {}
        for dependency in self.dependencies:
            value = await dependency.resolve(ctx)
            if dependency.name is not None:
                kwargs[dependency.name] = value
        for param in self.values:
            kwargs[param.name] = param.extract(ctx)
        for name in self.connection_names:
            kwargs[name] = ctx.connection
        return kwargs

    async def solve_or_raise(self, ctx: SolveContext) -> dict[str, Any]:
        kwargs = await self.solve(ctx)
        if ctx.errors:
            raise RequestValidationError(ctx.errors)
        return kwargs

    def __repr__(self) -> str:
        return f"<CallPlan {_describe(self.call)}>"


Invoker = Callable[[dict[str, Any], SolveContext, DependencyScope | None], typing.Awaitable[Any]]


def _invoker_for(call: Callable[..., Any]) -> Invoker:
    """How to call: awaited, inline, or entered as a (sync or async) context manager."""
    if _is_async_generator(call):
        as_context = asynccontextmanager(call)

        async def enter_async_generator(
            kwargs: dict[str, Any], ctx: SolveContext, scope: DependencyScope | None = None
        ) -> Any:
            return await ctx.exit_stack(scope).enter_async_context(as_context(**kwargs))

        return enter_async_generator
    if _is_generator(call):
        as_sync_context = contextmanager(call)

        async def enter_generator(
            kwargs: dict[str, Any], ctx: SolveContext, scope: DependencyScope | None = None
        ) -> Any:
            return ctx.exit_stack(scope).enter_context(as_sync_context(**kwargs))

        return enter_generator
    if is_coroutine_callable(call):

        async def await_call(
            kwargs: dict[str, Any], ctx: SolveContext, scope: DependencyScope | None = None
        ) -> Any:
            return await call(**kwargs)

        return await_call

    async def call_inline(
        kwargs: dict[str, Any], ctx: SolveContext, scope: DependencyScope | None = None
    ) -> Any:
        return call(**kwargs)

    return call_inline


def _call_target(call: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose kind (async, generator) decides how ``call`` is invoked."""
    if inspect.isroutine(call) or isinstance(call, partial) or inspect.isclass(call):
        return call
    return getattr(call, "__call__", call)  # noqa: B004 - a callable object's method


def is_coroutine_callable(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(_call_target(call))


def _is_async_generator(call: Callable[..., Any]) -> bool:
    return inspect.isasyncgenfunction(_call_target(call))


def _is_generator(call: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(_call_target(call))


# ---------------------------------------------------------------------------------------
# Building plans (registration time only).


class PlanBuilder:
    """Builds the plans of one route: it knows the route's kind and path parameters,
    and keeps the plans of dependency overrides so each is analysed once."""

    def __init__(self, kind: RouteKind, path_param_names: frozenset[str]) -> None:
        self.kind = kind
        self.path_param_names = path_param_names
        self._override_plans: dict[Callable[..., Any], CallPlan] = {}

    def plan(self, call: Callable[..., Any]) -> CallPlan:
        """The plan of a dependency override, built on first use and kept."""
        plan = self._override_plans.get(call)
        if plan is None:
            plan = self._override_plans[call] = self.build(call)
        return plan

    def build(
        self,
        call: Callable[..., Any],
        *,
        dependencies: Sequence[Depends] = (),
        connection_first: bool = False,
        scope: DependencyScope | None = None,
    ) -> CallPlan:
        """Analyse ``call``. ``dependencies`` run first, for their effect only.
        ``connection_first`` passes the connection as the first parameter whatever its
        annotation (Starlette's ``endpoint(websocket)`` contract). ``scope`` is the one
        ``call`` was declared with, when it is itself a dependency."""
        owner = _describe(call)
        route_dependencies = [
            DependencyParam(
                None,
                self._dependency_plan(marker, marker.dependency, owner, "dependencies"),
                marker.use_cache,
                marker.scope,
            )
            for marker in dependencies
        ]
        # FastAPI's rule: a generator dependency's clean-up runs at the end of its scope,
        # so one of request scope cannot use a value whose clean-up has already run.
        request_scoped_generator = (_is_generator(call) or _is_async_generator(call)) and (
            scope or "request"
        ) == "request"
        param_dependencies: list[DependencyParam] = []
        values: list[ValueParam] = []
        connection_names: list[str] = []
        for index, (param, annotation) in enumerate(_parameters(call, owner)):
            if connection_first and index == 0:
                connection_names.append(param.name)
                continue
            source = self._analyse(param, annotation, owner)
            if (
                isinstance(source, DependencyParam)
                and source.scope == "function"
                and request_scoped_generator
            ):
                call_name = getattr(call, "__name__", "<unnamed_callable>")
                raise DependencyScopeError(
                    f'The dependency "{call_name}" has a scope of "request", it cannot '
                    'depend on dependencies with scope "function".'
                )
            if isinstance(source, DependencyParam):
                param_dependencies.append(source)
            elif isinstance(source, ValueParam):
                values.append(source)
            else:
                connection_names.append(param.name)
        order = ("path", "query", "header", "cookie")
        values.sort(key=lambda value: order.index(value.source))
        return CallPlan(
            call,
            self,
            tuple(route_dependencies + param_dependencies),
            tuple(values),
            tuple(connection_names),
        )

    def _dependency_plan(
        self, marker: Depends, dependency: Any, owner: str, param_name: str
    ) -> CallPlan:
        if not callable(dependency):
            raise TypeError(
                f"{owner}: the dependency for {param_name!r} is not callable "
                f"({dependency!r}); pass a function or class to Depends()"
            )
        return self.build(dependency, scope=marker.scope)

    def _analyse(
        self, param: inspect.Parameter, annotation: Any, owner: str
    ) -> ValueParam | DependencyParam | None:
        """Returns ``None`` for a parameter that receives the connection."""
        name = param.name
        base, annotated_marker = _split_annotated(annotation, name, owner)
        default = param.default
        marker: Param | Depends | None = annotated_marker
        if isinstance(default, (Param, Depends)):
            if annotated_marker is not None:
                raise TypeError(
                    f"{owner}: cannot specify FastAPI annotations in `Annotated` and default "
                    f"value together for {name!r}"
                )
            marker = default
            default = default.default if isinstance(default, Param) else inspect.Parameter.empty

        connection_class = _connection_class(base)
        if connection_class is not None:
            if marker is not None:
                raise TypeError(
                    f"{owner}: parameter {name!r} is the {connection_class.__name__}; "
                    f"it takes no {type(marker).__name__}()"
                )
            expected = WebSocket if self.kind == "websocket" else Request
            if connection_class is not expected:
                raise TypeError(
                    f"{owner}: parameter {name!r} asks for a {connection_class.__name__}, "
                    f"but this is a {self.kind} route; annotate it {expected.__name__}"
                )
            return None

        if isinstance(marker, Depends):
            dependency = marker.dependency
            if dependency is None:
                if not inspect.isclass(base):
                    raise TypeError(
                        f"{owner}: parameter {name!r} uses Depends() without a dependency, "
                        "which needs a class annotation to call"
                    )
                dependency = base
            plan = self._dependency_plan(marker, dependency, owner, name)
            return DependencyParam(name, plan, marker.use_cache, marker.scope)

        if default is ...:
            default = inspect.Parameter.empty
        return self._value_param(name, base, marker, default, owner)

    def _value_param(
        self, name: str, annotation: Any, marker: Param | None, default: Any, owner: str
    ) -> ValueParam:
        is_path_param = name in self.path_param_names
        implicit = marker is None
        if marker is None:
            marker = Path() if is_path_param else Query()
        if is_path_param and not isinstance(marker, Path):
            raise TypeError(
                f"{owner}: cannot use `{type(marker).__name__}` for path param {name!r}"
            )
        source = typing.cast(Any, marker.source)
        alias = marker.alias or name
        if isinstance(marker, Header) and marker.alias is None and marker.convert_underscores:
            alias = name.replace("_", "-")
        if isinstance(marker, Path) and alias not in self.path_param_names:
            raise TypeError(
                f"{owner}: parameter {name!r} is declared Path() but the route path has no "
                f"{{{alias}}} segment"
            )
        is_list, item_type = _list_item_type(annotation)
        if is_list and source in ("path", "cookie"):
            raise TypeError(
                f"{owner}: {source} parameter {name!r} cannot be a list; only query and "
                "header parameters can repeat"
            )
        if is_list and implicit:
            # FastAPI reads an unmarked list from the request body; say how to get a query list.
            raise TypeError(
                f"{owner}: parameter {name!r} is a list without a marker; declare it "
                f"`{name}: {_type_name(annotation)} = Query(...)` to read repeated query values"
            )
        convert = _scalar_converter(item_type if is_list else annotation)
        if convert is None:
            raise TypeError(
                f"{owner}: parameter {name!r} has type {_type_name(annotation)}, which cannot "
                f"be read from the {source}; use str, int, float, bool, uuid.UUID, an Enum, "
                "X | None or (for query and header values) list[X], or take it from "
                "Depends(...)"
            )
        required = default is inspect.Parameter.empty or is_path_param
        return ValueParam(
            name=name,
            source=source,
            alias=alias,
            convert=convert,
            is_list=is_list,
            required=required,
            default=None if required else default,
            checks=_constraint_checks(marker, is_list),
        )


def _split_annotated(annotation: Any, name: str, owner: str) -> tuple[Any, Param | Depends | None]:
    """``Annotated[X, Query(), ...]`` -> ``(X, Query())``: the last marker wins."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None
    base, *metadata = typing.get_args(annotation)
    markers = [item for item in metadata if isinstance(item, (Param, Depends))]
    if not markers:
        return base, None
    marker = markers[-1]
    if isinstance(marker, Param) and not marker.required:
        raise TypeError(
            f"{owner}: `{type(marker).__name__}` default value cannot be set in `Annotated` "
            f"for {name!r}. Set the default value with `=` instead."
        )
    return base, marker


def _connection_class(annotation: Any) -> type | None:
    if inspect.isclass(annotation):
        for connection_class in (WebSocket, Request):
            if issubclass(annotation, connection_class):
                return connection_class
    return None


def _parameters(call: Callable[..., Any], owner: str) -> list[tuple[inspect.Parameter, Any]]:
    """The parameters ``call`` can be given by name, each with its resolved annotation."""
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{owner}: cannot read the signature ({exc})") from None
    hints_source = _hints_source(call)
    try:
        hints = typing.get_type_hints(hints_source, include_extras=True)
    except Exception:
        hints = {}
    namespace = getattr(inspect.unwrap(hints_source), "__globals__", {})
    resolved = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(
                f"{owner}: parameter {param.name!r} is positional-only; handler and dependency "
                "parameters are passed by name"
            )
        annotation = hints.get(param.name, param.annotation)
        if isinstance(annotation, str):
            annotation = _evaluate(annotation, namespace, param.name, owner)
        resolved.append((param, annotation))
    return resolved


def _hints_source(call: Callable[..., Any]) -> Any:
    if isinstance(call, partial):
        return _hints_source(call.func)
    if inspect.isclass(call):
        return call.__init__
    if inspect.isroutine(call):
        return call
    return type(call).__call__


def _evaluate(annotation: str, namespace: dict[str, Any], name: str, owner: str) -> Any:
    try:
        return eval(annotation, namespace)
    except Exception as exc:
        raise TypeError(
            f"{owner}: cannot resolve the annotation {annotation!r} of parameter {name!r} "
            f"({exc}); define the type at module level"
        ) from None


def _describe(call: Any) -> str:
    if isinstance(call, partial):
        return _describe(call.func)
    name = getattr(call, "__qualname__", None) or type(call).__qualname__
    return f"{name}()"


def _type_name(annotation: Any) -> str:
    if inspect.isclass(annotation) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation)
