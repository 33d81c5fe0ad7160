"""Routes, routers and the app's route table, and what a route's ``handle`` does with a
connection or request, run without a server."""

import json

import pytest
from dependency_support import FakeConnection, FakeHttpRequest, response_of, run

from ferrosock.applications import App
from ferrosock.exceptions import HTTPException, WebSocketException
from ferrosock.params import Depends, Header
from ferrosock.requests import Request
from ferrosock.responses import HTMLResponse, PlainTextResponse
from ferrosock.routing import APIRoute, APIRouter, WebSocketRoute
from ferrosock.websockets import WebSocket


async def ws_endpoint(websocket: WebSocket): ...


def http_request(app, method="GET", path="/", **options):
    return Request(FakeHttpRequest(method, path, **options), app)


# -- The route table ----------------------------------------------------------------------


def test_route_attributes_describe_the_table_entry():
    app = App()

    @app.websocket("/ws/{client_id}")
    async def chat(websocket: WebSocket, client_id: int): ...

    @app.post("/items")
    def create_item(): ...

    ws_route, http_route = app.routes
    assert (ws_route.path, ws_route.kind, ws_route.methods, ws_route.name) == (
        "/ws/{client_id}",
        "websocket",
        [],
        "chat",
    )
    assert ws_route.endpoint is chat
    assert isinstance(ws_route, WebSocketRoute)
    assert (http_route.path, http_route.kind, http_route.methods) == ("/items", "http", ["POST"])
    assert isinstance(http_route, APIRoute)


def test_decorators_return_the_endpoint_unchanged():
    router = APIRouter()

    async def endpoint(): ...

    assert router.get("/")(endpoint) is endpoint
    assert router.websocket("/ws")(ws_endpoint) is ws_endpoint


def test_api_route_defaults_to_get_and_upper_cases_methods():
    router = APIRouter()

    @router.api_route("/a")
    def a(): ...

    @router.api_route("/b", methods=["get", "post", "GET"])
    def b(): ...

    assert [route.methods for route in router.routes] == [["GET"], ["GET", "POST"]]


def test_each_method_decorator_registers_its_method():
    router = APIRouter()
    for method in ("get", "post", "put", "delete", "patch", "head", "options"):
        getattr(router, method)(f"/{method}")(lambda: None)
    assert [route.methods for route in router.routes] == [
        ["GET"],
        ["POST"],
        ["PUT"],
        ["DELETE"],
        ["PATCH"],
        ["HEAD"],
        ["OPTIONS"],
    ]


def test_router_prefix_is_prepended_to_its_routes():
    router = APIRouter(prefix="/chat")
    router.add_api_websocket_route("/ws/{room}", ws_endpoint, name="room")
    assert [(route.path, route.name) for route in router.routes] == [("/chat/ws/{room}", "room")]


def test_include_router_stacks_prefixes():
    inner = APIRouter(prefix="/items")

    @inner.websocket("/{item_id}/ws")
    async def item_socket(websocket: WebSocket, item_id: int): ...

    @inner.get("")
    def list_items(): ...

    outer = APIRouter(prefix="/api")
    outer.include_router(inner, prefix="/v1")
    app = App()
    app.include_router(outer)
    assert [route.path for route in app.routes] == ["/api/v1/items/{item_id}/ws", "/api/v1/items"]


def test_include_router_copies_routes_present_at_that_time():
    router = APIRouter()
    router.add_api_websocket_route("/first", ws_endpoint)
    app = App()
    app.include_router(router)
    router.add_api_websocket_route("/second", ws_endpoint)
    assert [route.path for route in app.routes] == ["/first"]


def test_included_route_keeps_its_path_params_typed():
    router = APIRouter(prefix="/rooms")

    @router.websocket("/{room_id}")
    async def room(websocket: WebSocket, room_id: int):
        websocket.seen = room_id

    app = App()
    app.include_router(router, prefix="/v2")
    connection = FakeConnection(app, path_params={"room_id": "7"})
    run(app.routes[0].handle(connection))
    assert connection.seen == 7


@pytest.mark.parametrize("prefix", ["chat", "/chat/"])
def test_bad_prefix_is_rejected(prefix):
    with pytest.raises(ValueError, match="prefix"):
        APIRouter(prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        App().include_router(APIRouter(), prefix=prefix)


def test_path_without_leading_slash_is_rejected_naming_the_endpoint():
    with pytest.raises(ValueError, match=r"'ws'.*ws_endpoint.*must start with '/'"):
        App().add_api_websocket_route("ws", ws_endpoint)


def test_unknown_path_convertor_is_rejected_naming_it():
    with pytest.raises(ValueError, match=r"unknown path convertor 'slug' in \{name:slug\}"):
        App().add_api_websocket_route("/files/{name:slug}", ws_endpoint)


def test_path_convertor_must_end_the_route_path():
    with pytest.raises(ValueError, match=r"\{rest:path\} matches the rest of the path"):
        App().add_api_websocket_route("/files/{rest:path}/meta", ws_endpoint)


def test_sync_websocket_endpoint_is_rejected_at_registration():
    def blocking(websocket: WebSocket): ...

    with pytest.raises(TypeError, match=r"blocking must be an async function"):
        App().add_api_websocket_route("/ws", blocking)


def test_unsatisfiable_parameter_is_rejected_when_the_decorator_runs():
    app = App()
    with pytest.raises(TypeError, match=r"needs_body\(\): parameter 'payload'"):

        @app.websocket("/ws")
        async def needs_body(websocket: WebSocket, payload: dict): ...

    assert app.routes == []


def test_app_routes_given_up_front_are_kept():
    route = WebSocketRoute("/ws", ws_endpoint)
    assert App(routes=[route]).routes == [route]


# -- WebSocket routes: handle -------------------------------------------------------------


def test_websocket_handle_calls_endpoint_with_solved_arguments():
    app = App()
    received = {}

    @app.websocket("/items/{item_id}/ws")
    async def endpoint(*, websocket: WebSocket, item_id: str, q: int | None = None):
        received.update(websocket=websocket, item_id=item_id, q=q)

    connection = FakeConnection(app, path_params={"item_id": "foo"}, query_string="q=3")
    run(app.routes[0].handle(connection))
    assert received == {"websocket": connection, "item_id": "foo", "q": 3}


def test_websocket_invalid_parameter_refuses_with_policy_violation():
    app = App()
    called = []

    @app.websocket("/items/{item_id}/ws")
    async def endpoint(websocket: WebSocket, item_id: int):
        called.append(item_id)

    connection = FakeConnection(app, path_params={"item_id": "foo"})
    run(app.routes[0].handle(connection))
    code, reason = connection.closed
    assert code == 1008
    assert "path.item_id" in reason
    assert called == []


def test_websocket_refusal_reason_fits_in_a_close_frame():
    app = App()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket, a: int, b: int, c: int, d: int, e: int): ...

    connection = FakeConnection(app)
    run(app.routes[0].handle(connection))
    assert 0 < len(connection.closed[1].encode()) <= 123


def test_endpoint_exception_propagates_unchanged():
    app = App()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket):
        raise LookupError("handler bug")

    with pytest.raises(LookupError, match="handler bug"):
        run(app.routes[0].handle(FakeConnection(app)))


def test_router_and_route_dependencies_run_in_order_before_the_endpoint():
    order = []

    def app_level():
        order.append("app")

    def router_level():
        order.append("router")

    def include_level():
        order.append("include")

    def route_level():
        order.append("route")

    router = APIRouter(dependencies=[Depends(router_level)])

    @router.websocket("/ws", dependencies=[Depends(route_level)])
    async def endpoint(websocket: WebSocket):
        order.append("endpoint")

    app = App(dependencies=[Depends(app_level)])
    app.include_router(router, dependencies=[Depends(include_level)])
    run(app.routes[0].handle(FakeConnection(app)))
    assert order == ["app", "include", "router", "route", "endpoint"]


def test_dependency_raising_websocket_exception_stops_the_endpoint():
    def require_token(token: str | None = None):
        if token is None:
            raise WebSocketException(code=4401, reason="no token")

    app = App()
    called = []

    @app.websocket("/ws", dependencies=[Depends(require_token)])
    async def endpoint(websocket: WebSocket):
        called.append(True)

    connection = FakeConnection(app)
    run(app.routes[0].handle(connection))
    assert (connection.closed, called) == ((4401, "no token"), [])


def test_app_dependency_overrides_apply_to_websocket_routes():
    def get_user():
        return "real user"

    app = App()
    seen = []

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket, user: str = Depends(get_user)):
        seen.append(user)

    app.dependency_overrides[get_user] = lambda: "test user"
    run(app.routes[0].handle(FakeConnection(app)))
    assert seen == ["test user"]


def test_starlette_style_route_passes_the_websocket_positionally():
    app = App()
    seen = []

    @app.websocket_route("/plain")
    async def plain(websocket):
        seen.append(websocket)

    connection = FakeConnection(app, query_string="websocket=not-this")
    run(app.routes[0].handle(connection))
    assert seen == [connection]


def test_generator_dependency_closes_after_the_websocket_endpoint_returns():
    events = []

    async def session():
        events.append("open")
        yield "db"
        events.append("close")

    app = App()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket, db: str = Depends(session)):
        events.append(f"endpoint {db}")

    run(app.routes[0].handle(FakeConnection(app)))
    assert events == ["open", "endpoint db", "close"]


# -- HTTP routes: handle ------------------------------------------------------------------


def test_returned_dict_becomes_compact_json():
    app = App()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    request = http_request(app, path_params={"item_id": "5"}, query_string="q=é")
    response = response_of(app.routes[0], request)
    assert response.status_code == 200
    assert response.body == '{"item_id":5,"q":"é"}'.encode()
    assert response.headers["content-type"] == "application/json"


def test_sync_http_endpoint_is_called_inline():
    app = App()

    @app.get("/")
    def root():
        return ["sync"]

    assert response_of(app.routes[0], http_request(app)).body == b'["sync"]'


def test_returned_response_passes_through():
    app = App()
    page = HTMLResponse("<h1>hi</h1>", status_code=201)

    @app.get("/")
    async def root():
        return page

    assert response_of(app.routes[0], http_request(app)) is page


def test_status_code_and_response_class_shape_the_response():
    app = App()

    @app.post("/items", status_code=201, response_class=PlainTextResponse)
    async def create():
        return "created"

    response = response_of(app.routes[0], http_request(app, "POST"))
    assert (response.status_code, response.body) == (201, b"created")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_http_exception_becomes_detail_json_with_its_status_and_headers():
    app = App()

    @app.get("/")
    async def root():
        raise HTTPException(status_code=404, detail="Item not found", headers={"X-Error": "1"})

    response = response_of(app.routes[0], http_request(app))
    assert response.status_code == 404
    assert json.loads(response.body) == {"detail": "Item not found"}
    assert response.headers["x-error"] == "1"


def test_http_exception_without_detail_uses_the_status_phrase():
    app = App()

    @app.get("/")
    async def root():
        raise HTTPException(status_code=403)

    response = response_of(app.routes[0], http_request(app))
    assert json.loads(response.body) == {"detail": "Forbidden"}


def test_invalid_http_parameter_answers_422_with_error_list():
    app = App()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, x_token: str = Header()):
        return {}

    response = response_of(app.routes[0], http_request(app, path_params={"item_id": "x"}))
    assert response.status_code == 422
    assert json.loads(response.body) == {
        "detail": [
            {
                "type": "int_parsing",
                "loc": ["path", "item_id"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "x",
            },
            {
                "type": "missing",
                "loc": ["header", "x-token"],
                "msg": "Field required",
                "input": None,
            },
        ]
    }


def test_request_parameter_sees_method_body_and_state():
    app = App()

    @app.post("/echo")
    async def echo(request: Request):
        request.state.seen = True
        return {"method": request.method, "json": await request.json(), "state": request.state.seen}

    request = http_request(app, "POST", body=b'{"a":1}')
    assert json.loads(response_of(app.routes[0], request).body) == {
        "method": "POST",
        "json": {"a": 1},
        "state": True,
    }


def test_unexpected_http_exception_propagates_to_the_server():
    app = App()

    @app.get("/")
    async def root():
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        response_of(app.routes[0], http_request(app))


def test_http_dependency_override_replaces_dependency():
    def settings():
        return "production"

    app = App()

    @app.get("/")
    async def root(mode: str = Depends(settings)):
        return mode

    app.dependency_overrides[settings] = lambda: "testing"
    assert response_of(app.routes[0], http_request(app)).body == b'"testing"'
