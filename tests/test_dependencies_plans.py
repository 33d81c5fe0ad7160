"""Call plans: how a handler's parameters are found, converted and reported, run against a
stand-in connection (no server needed)."""

import enum
import uuid
from typing import Annotated, Optional, Union

import pytest
from dependency_support import FakeApp, FakeConnection, run

from ferrosock.dependencies import PlanBuilder, SolveContext
from ferrosock.exceptions import RequestValidationError
from ferrosock.params import Cookie, Depends, Header, Path, Query
from ferrosock.requests import Request
from ferrosock.websockets import WebSocket


def solve(call, connection=None, *, path="/", kind="websocket", dependencies=()):
    """Build ``call``'s plan for a route at ``path`` and solve it for ``connection``."""
    names = frozenset(part[1:-1] for part in path.split("/") if part.startswith("{"))
    plan = PlanBuilder(kind, names).build(call, dependencies=dependencies)
    connection = connection or FakeConnection()

    async def solve_in_context():
        async with SolveContext(connection) as ctx:
            return await plan.solve_or_raise(ctx)

    return run(solve_in_context())


def validation_errors(call, connection, **options):
    with pytest.raises(RequestValidationError) as caught:
        solve(call, connection, **options)
    return caught.value.errors()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


# -- Where values come from ---------------------------------------------------------------


def test_name_in_path_is_path_param_and_converted_by_annotation():
    async def endpoint(item_id: int): ...

    kwargs = solve(endpoint, FakeConnection(path_params={"item_id": "42"}), path="/{item_id}")
    assert kwargs == {"item_id": 42}


def test_unmarked_parameter_not_in_path_is_query_param():
    async def endpoint(q: str): ...

    assert solve(endpoint, FakeConnection(query_string="q=hello")) == {"q": "hello"}


def test_query_param_takes_last_value_when_repeated():
    async def endpoint(q: int): ...

    assert solve(endpoint, FakeConnection(query_string="q=1&q=2")) == {"q": 2}


def test_list_query_param_collects_every_value():
    async def endpoint(q: list[int] = Query()): ...

    assert solve(endpoint, FakeConnection(query_string="q=1&q=2&q=3")) == {"q": [1, 2, 3]}


def test_optional_list_query_param_defaults_when_absent():
    async def endpoint(q: list[str] | None = Query(None)): ...

    assert solve(endpoint) == {"q": None}


def test_header_param_converts_underscores_and_ignores_case():
    async def endpoint(x_token: str = Header()): ...

    connection = FakeConnection(headers=[("X-Token", "secret")])
    assert solve(endpoint, connection) == {"x_token": "secret"}


def test_header_param_without_underscore_conversion_reads_name_as_is():
    async def endpoint(x_token: str | None = Header(None, convert_underscores=False)): ...

    assert solve(endpoint, FakeConnection(headers=[("x-token", "dash")])) == {"x_token": None}
    assert solve(endpoint, FakeConnection(headers=[("x_token", "under")])) == {"x_token": "under"}


def test_cookie_param_reads_cookie_header():
    async def endpoint(session: str | None = Cookie(None)): ...

    connection = FakeConnection(headers=[("cookie", "theme=dark; session=abc")])
    assert solve(endpoint, connection) == {"session": "abc"}


def test_alias_names_the_key_read():
    async def endpoint(item_query: str = Query(alias="item-query")): ...

    assert solve(endpoint, FakeConnection(query_string="item-query=x")) == {"item_query": "x"}


def test_annotated_marker_with_default_after_equals():
    async def endpoint(token: Annotated[str | None, Query()] = None): ...

    assert solve(endpoint) == {"token": None}
    assert solve(endpoint, FakeConnection(query_string="token=t")) == {"token": "t"}


def test_keyword_only_parameters_are_solved():
    async def endpoint(*, websocket: WebSocket, item_id: str, q: int | None = None): ...

    connection = FakeConnection(path_params={"item_id": "foo"}, query_string="q=3")
    kwargs = solve(endpoint, connection, path="/items/{item_id}/ws")
    assert kwargs == {"websocket": connection, "item_id": "foo", "q": 3}


def test_request_parameter_receives_the_connection_in_http_route():
    def endpoint(request: Request): ...

    connection = FakeConnection()
    assert solve(endpoint, connection, kind="http") == {"request": connection}


# -- Conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "raw", "expected"),
    [
        (int, "-7", -7),
        (float, "2.5", 2.5),
        (bool, "yes", True),
        (bool, "0", False),
        (bool, "OFF", False),
        (str, "text", "text"),
        (uuid.UUID, "12345678-1234-5678-1234-567812345678",
         uuid.UUID("12345678-1234-5678-1234-567812345678")),
        (Color, "blue", Color.BLUE),
        (Optional[int], "5", 5),  # noqa: UP045 - the old spelling must keep working
        (Union[int, float], "1.5", 1.5),  # noqa: UP007
        (Union[int, str], "12", "12"),  # noqa: UP007 - str in a union keeps the string
    ],
)  # fmt: skip
def test_annotation_converts_raw_query_value(annotation, raw, expected):
    async def endpoint(value): ...

    endpoint.__annotations__["value"] = annotation
    assert solve(endpoint, FakeConnection(query_string=f"value={raw}")) == {"value": expected}


def test_unparsable_int_reports_fastapi_shaped_error():
    async def endpoint(item_id: int): ...

    errors = validation_errors(
        endpoint, FakeConnection(path_params={"item_id": "foo"}), path="/{item_id}"
    )
    assert errors == [
        {
            "type": "int_parsing",
            "loc": ("path", "item_id"),
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "foo",
        }
    ]


def test_missing_required_query_reports_field_required():
    async def endpoint(token: str): ...

    errors = validation_errors(endpoint, FakeConnection())
    assert errors == [
        {"type": "missing", "loc": ("query", "token"), "msg": "Field required", "input": None}
    ]


def test_every_problem_is_reported_together_path_first():
    async def endpoint(q: int, item_id: int, x_key: str = Header()): ...

    connection = FakeConnection(path_params={"item_id": "x"}, query_string="q=y")
    errors = validation_errors(endpoint, connection, path="/{item_id}")
    assert [error["loc"] for error in errors] == [
        ("path", "item_id"),
        ("query", "q"),
        ("header", "x-key"),
    ]


def test_bad_list_item_is_located_by_index():
    async def endpoint(q: list[int] = Query()): ...

    errors = validation_errors(endpoint, FakeConnection(query_string="q=1&q=two"))
    assert errors[0]["loc"] == ("query", "q", 1)
    assert errors[0]["input"] == "two"


def test_enum_mismatch_lists_expected_values():
    async def endpoint(color: Color): ...

    errors = validation_errors(endpoint, FakeConnection(query_string="color=green"))
    assert errors[0]["type"] == "enum"
    assert errors[0]["msg"] == "Input should be 'red' or 'blue'"


def test_constraints_are_checked_after_conversion():
    async def endpoint(
        size: int = Query(1, gt=0, le=10),
        name: str | None = Query(None, min_length=2, max_length=4, pattern="^[a-z]+$"),
    ): ...

    assert solve(endpoint, FakeConnection(query_string="size=10&name=abc")) == {
        "size": 10,
        "name": "abc",
    }
    errors = validation_errors(endpoint, FakeConnection(query_string="size=0&name=ABCDE"))
    assert [(error["type"], error["ctx"]) for error in errors] == [
        ("greater_than", {"gt": 0}),
        ("string_too_long", {"max_length": 4}),
    ]
    errors = validation_errors(endpoint, FakeConnection(query_string="name=A1"))
    assert errors[0]["type"] == "string_pattern_mismatch"


def test_default_is_used_as_given_without_conversion():
    sentinel = object()

    async def endpoint(q: int = sentinel): ...  # type: ignore[assignment]

    assert solve(endpoint)["q"] is sentinel


# -- Dependencies -------------------------------------------------------------------------


def test_sync_and_async_dependencies_feed_the_endpoint():
    def sync_dependency(a: int):
        return a * 2

    async def async_dependency(b: int):
        return b * 3

    async def endpoint(
        x: int = Depends(sync_dependency), y: Annotated[int, Depends(async_dependency)] = 0
    ): ...

    assert solve(endpoint, FakeConnection(query_string="a=1&b=2")) == {"x": 2, "y": 6}


def test_dependency_receives_the_websocket_and_sub_dependencies():
    def base(token: str):
        return token

    def user(websocket: WebSocket, token: str = Depends(base)):
        return (websocket, token)

    async def endpoint(current: tuple = Depends(user)): ...

    connection = FakeConnection(query_string="token=t")
    assert solve(endpoint, connection) == {"current": (connection, "t")}


def test_dependency_used_twice_runs_once_per_call_with_cache():
    calls = []

    def counted():
        calls.append(1)
        return len(calls)

    def first(value: int = Depends(counted)):
        return value

    async def endpoint(a: int = Depends(first), b: int = Depends(counted)): ...

    assert solve(endpoint) == {"a": 1, "b": 1}
    assert solve(endpoint) == {"a": 2, "b": 2}  # a new call has a new cache


def test_dependency_without_cache_runs_each_time():
    calls = []

    def counted():
        calls.append(1)
        return len(calls)

    async def endpoint(a: int = Depends(counted), b: int = Depends(counted, use_cache=False)): ...

    assert solve(endpoint) == {"a": 1, "b": 2}


def test_depends_without_argument_calls_the_annotated_class():
    class Pagination:
        def __init__(self, skip: int = 0, limit: int = 10):
            self.skip, self.limit = skip, limit

    async def endpoint(page: Pagination = Depends()): ...

    page = solve(endpoint, FakeConnection(query_string="skip=5"))["page"]
    assert (page.skip, page.limit) == (5, 10)


def test_callable_instance_dependency_is_called():
    class FixedPrefix:
        def __init__(self, prefix: str):
            self.prefix = prefix

        async def __call__(self, q: str):
            return self.prefix + q

    async def endpoint(value: str = Depends(FixedPrefix("p-"))): ...

    assert solve(endpoint, FakeConnection(query_string="q=x")) == {"value": "p-x"}


def test_dependency_with_invalid_input_is_not_called_and_errors_surface():
    called = []

    def needs_int(n: int):
        called.append(n)
        return n

    async def endpoint(value: int = Depends(needs_int)): ...

    errors = validation_errors(endpoint, FakeConnection(query_string="n=x"))
    assert errors[0]["loc"] == ("query", "n")
    assert called == []


def test_route_dependencies_run_first_for_their_effect():
    order = []

    def check():
        order.append("check")

    def value():
        order.append("value")
        return 1

    async def endpoint(v: int = Depends(value)): ...

    assert solve(endpoint, dependencies=[Depends(check)]) == {"v": 1}
    assert order == ["check", "value"]


def test_dependency_override_is_looked_up_at_call_time():
    def real():
        return "real"

    async def endpoint(value: str = Depends(real)): ...

    app = FakeApp()
    builder = PlanBuilder("websocket", frozenset())
    plan = builder.build(endpoint)

    async def solve_with(app):
        async with SolveContext(FakeConnection(app)) as ctx:
            return await plan.solve_or_raise(ctx)

    assert run(solve_with(app)) == {"value": "real"}

    def fake(q: str = "none"):
        return f"fake:{q}"

    app.dependency_overrides[real] = fake
    assert run(solve_with(app)) == {"value": "fake:none"}
    app.dependency_overrides.clear()
    assert run(solve_with(app)) == {"value": "real"}


def test_generator_dependency_cleans_up_after_the_call_in_reverse_order():
    events = []

    def sync_resource():
        events.append("open sync")
        yield "sync"
        events.append("close sync")

    async def async_resource():
        events.append("open async")
        yield "async"
        events.append("close async")

    async def endpoint(a: str = Depends(sync_resource), b: str = Depends(async_resource)): ...

    plan = PlanBuilder("websocket", frozenset()).build(endpoint)

    async def call():
        async with SolveContext(FakeConnection()) as ctx:
            kwargs = await plan.solve_or_raise(ctx)
            events.append(f"endpoint {kwargs['a']} {kwargs['b']}")

    run(call())
    assert events == ["open sync", "open async", "endpoint sync async", "close async", "close sync"]


def test_generator_dependency_sees_the_endpoint_exception():
    seen = []

    async def resource():
        try:
            yield "r"
        except ValueError as exc:
            seen.append(str(exc))
            raise

    async def endpoint(r: str = Depends(resource)): ...

    plan = PlanBuilder("websocket", frozenset()).build(endpoint)

    async def call():
        async with SolveContext(FakeConnection()) as ctx:
            await plan.solve_or_raise(ctx)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(call())
    assert seen == ["boom"]


def test_string_annotations_are_resolved_from_the_module():
    async def endpoint(item_id: int, color: Color | None = None): ...

    endpoint.__annotations__ = {"item_id": "int", "color": "Color | None"}
    kwargs = solve(endpoint, FakeConnection(path_params={"item_id": "3"}), path="/{item_id}")
    assert kwargs == {"item_id": 3, "color": None}


# -- Registration errors ------------------------------------------------------------------


def build(call, *, path="/", kind="websocket"):
    names = frozenset(part[1:-1] for part in path.split("/") if part.startswith("{"))
    return PlanBuilder(kind, names).build(call)


def test_query_marker_on_path_param_is_rejected_naming_the_function():
    async def item_socket(item_id: int = Query()): ...

    with pytest.raises(TypeError, match=r"item_socket\(\).*cannot use `Query` for path param"):
        build(item_socket, path="/{item_id}")


def test_path_marker_for_name_missing_from_path_is_rejected():
    async def orphan_path(item_id: int = Path()): ...

    with pytest.raises(TypeError, match=r"orphan_path\(\).*\{item_id\}"):
        build(orphan_path, path="/items")


def test_path_marker_with_default_is_rejected():
    with pytest.raises(ValueError, match="Path parameters cannot have a default value"):
        Path(3)


def test_default_inside_annotated_marker_is_rejected():
    async def annotated_default(q: Annotated[str, Query("x")]): ...

    with pytest.raises(TypeError, match=r"annotated_default\(\).*Set the default value with `=`"):
        build(annotated_default)


def test_marker_in_annotated_and_default_together_is_rejected():
    async def doubled(q: Annotated[str, Query()] = Query(None)): ...

    with pytest.raises(TypeError, match=r"doubled\(\).*in `Annotated` and default value"):
        build(doubled)


def test_unsupported_type_is_rejected_naming_function_and_parameter():
    async def takes_dict(payload: dict): ...

    with pytest.raises(TypeError, match=r"takes_dict\(\): parameter 'payload' has type dict"):
        build(takes_dict)


def test_unmarked_list_is_rejected_with_a_hint():
    async def takes_list(tags: list[str]): ...

    with pytest.raises(TypeError, match=r"takes_list\(\).*Query\(\.\.\.\)"):
        build(takes_list)


def test_list_path_param_is_rejected():
    async def list_path(ids: list[int] = Path()): ...

    with pytest.raises(TypeError, match=r"list_path\(\).*cannot be a list"):
        build(list_path, path="/{ids}")


def test_request_parameter_in_websocket_route_is_rejected():
    async def wrong_connection(request: Request): ...

    with pytest.raises(TypeError, match=r"wrong_connection\(\).*annotate it WebSocket"):
        build(wrong_connection, kind="websocket")


def test_websocket_parameter_in_http_route_is_rejected():
    async def wrong_connection(websocket: WebSocket): ...

    with pytest.raises(TypeError, match=r"wrong_connection\(\).*annotate it Request"):
        build(wrong_connection, kind="http")


def test_unresolvable_string_annotation_is_rejected_naming_the_parameter():
    async def forward(value: "NoSuchType"): ...  # noqa: F821

    with pytest.raises(TypeError, match=r"forward\(\).*'NoSuchType' of parameter 'value'"):
        build(forward)


def test_positional_only_parameter_is_rejected():
    async def positional(q: str, /): ...

    with pytest.raises(TypeError, match=r"positional\(\).*positional-only"):
        build(positional)


def test_depends_without_dependency_on_non_class_annotation_is_rejected():
    async def no_dependency(value: int | None = Depends()): ...

    with pytest.raises(TypeError, match=r"no_dependency\(\).*needs a class annotation"):
        build(no_dependency)


def test_registration_error_in_a_dependency_names_the_dependency():
    def broken_dependency(payload: dict): ...

    async def endpoint(value: str = Depends(broken_dependency)): ...

    with pytest.raises(TypeError, match=r"broken_dependency\(\): parameter 'payload'"):
        build(endpoint)
