"""``App``: what it stores, its lifespan context, and its delegation to the router."""

from contextlib import asynccontextmanager

import pytest
from dependency_support import run

from ferrosock import App, FastAPI, WebSocketDisconnect
from ferrosock.datastructures import State
from ferrosock.exceptions import (
    HTTPException,
    RequestValidationError,
    WebSocketException,
    WebSocketRequestValidationError,
)
from ferrosock.requests import Request
from ferrosock.responses import JSONResponse, PlainTextResponse
from ferrosock.routing import APIRouter
from ferrosock.testclient import TestClient
from ferrosock.websockets import WebSocket


def test_fastapi_is_the_same_class_as_app():
    assert FastAPI is App


def test_server_settings_are_stored_apart_from_metadata():
    app = App(title="Chat", version="2.0", port=9000, ws_ping_interval=10.0)
    assert app.settings == {"port": 9000, "ws_ping_interval": 10.0}
    assert (app.title, app.version) == ("Chat", "2.0")


def test_app_has_state_and_empty_overrides():
    app = App()
    assert isinstance(app.state, State)
    assert app.dependency_overrides == {}


def test_routes_are_the_router_routes():
    app = App()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket): ...

    assert isinstance(app.router, APIRouter)
    assert app.routes is app.router.routes
    assert [route.path for route in app.routes] == ["/ws"]


def test_lifespan_context_without_lifespan_is_a_no_op():
    async def enter_and_leave():
        async with App().lifespan_context(None) as state:
            return state

    assert run(enter_and_leave()) is None


def test_lifespan_context_passes_the_app_and_yields_its_state():
    seen = []

    @asynccontextmanager
    async def lifespan(app):
        seen.append(app)
        yield {"pool": "ready"}
        seen.append("closed")

    app = App(lifespan=lifespan)

    async def enter_and_leave():
        async with app.lifespan_context(app) as state:
            seen.append(state)

    run(enter_and_leave())
    assert seen == [app, {"pool": "ready"}, "closed"]


def test_bare_async_generator_lifespan_is_accepted():
    seen = []

    async def lifespan(app):
        seen.append("start")
        yield
        seen.append("stop")

    app = App(lifespan=lifespan)

    async def enter_and_leave():
        async with app.lifespan_context(app):
            seen.append("serving")

    run(enter_and_leave())
    assert seen == ["start", "serving", "stop"]


def test_shutdown_handlers_run_when_serving_fails():
    seen = []
    app = App(
        on_startup=[lambda: seen.append("startup")], on_shutdown=[lambda: seen.append("shutdown")]
    )

    async def fail_while_serving():
        async with app.lifespan_context(app):
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        run(fail_while_serving())
    assert seen == ["startup", "shutdown"]


def test_unknown_event_type_is_rejected():
    with pytest.raises(ValueError, match="'startup' or 'shutdown'"):
        App().on_event("start")


def test_unknown_keyword_fails_when_the_app_is_built_naming_it():
    with pytest.raises(TypeError, match=r"unknown server setting\(s\): ws_ping_intervall"):
        App(ws_ping_intervall=5)


class OutOfStock(Exception):
    def __init__(self, item: str) -> None:
        self.item = item


def handled_app() -> App:
    async def out_of_stock(request: Request, exc: OutOfStock):
        return JSONResponse({"out_of_stock": exc.item}, status_code=409)

    app = App(exception_handlers={OutOfStock: out_of_stock})

    @app.exception_handler(404)
    def not_found(request: Request, exc: HTTPException):
        return PlainTextResponse(f"nothing at {request.url.path}", status_code=404)

    @app.exception_handler(WebSocketException)
    async def refuse_politely(websocket: WebSocket, exc: WebSocketException):
        await websocket.close(code=exc.code, reason=f"politely: {exc.reason}")

    @app.exception_handler(Exception)
    def server_error(request: Request, exc: Exception):
        return JSONResponse({"error": type(exc).__name__}, status_code=500)

    @app.get("/items/{name}")
    def item(name: str):
        if name == "gone":
            raise HTTPException(status_code=404)
        if name == "bug":
            raise ZeroDivisionError
        raise OutOfStock(name)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        raise WebSocketException(code=4003, reason="closed for the night")

    return app


def test_exception_handlers_given_to_app_answer_http_routes():
    with TestClient(handled_app()) as client:
        response = client.get("/items/tea")
    assert (response.status_code, response.json()) == (409, {"out_of_stock": "tea"})


def test_status_code_handler_answers_http_exceptions_with_that_status():
    with TestClient(handled_app()) as client:
        response = client.get("/items/gone")
    assert (response.status_code, response.text) == (404, "nothing at /items/gone")


def test_websocket_exception_handler_closes_the_socket():
    with TestClient(handled_app()) as client:
        with pytest.raises(WebSocketDisconnect) as caught:
            with client.websocket_connect("/ws"):
                pytest.fail("accepted")  # pragma: no cover
    assert (caught.value.code, caught.value.reason) == (4003, "politely: closed for the night")


def test_server_error_handler_answers_and_the_error_still_reaches_the_test():
    with TestClient(handled_app()) as client:
        with pytest.raises(ZeroDivisionError):
            client.get("/items/bug")
    with TestClient(handled_app(), raise_server_exceptions=False) as client:
        response = client.get("/items/bug")
    assert (response.status_code, response.json()) == (500, {"error": "ZeroDivisionError"})


def test_exception_handler_key_must_be_an_exception_class_or_status():
    with pytest.raises(TypeError, match="exception class or an HTTP status code"):
        App(exception_handlers={"OutOfStock": lambda request, exc: None})


def test_validation_error_handlers_get_fastapis_errors_for_http_and_websocket():
    app = App()

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"where": [error["loc"] for error in exc.errors()]}, status_code=400)

    @app.exception_handler(WebSocketRequestValidationError)
    async def bad_handshake(websocket: WebSocket, exc: WebSocketRequestValidationError):
        await websocket.close(code=4400, reason=exc.errors()[0]["type"])

    @app.get("/items/{item_id}")
    def item(item_id: int): ...

    @app.websocket("/ws/{room_id}")
    async def room(websocket: WebSocket, room_id: int): ...

    with TestClient(app) as client:
        response = client.get("/items/x")
        with pytest.raises(WebSocketDisconnect) as caught:
            with client.websocket_connect("/ws/lobby"):
                pytest.fail("accepted")  # pragma: no cover
    assert (response.status_code, response.json()) == (400, {"where": [["path", "item_id"]]})
    assert (caught.value.code, caught.value.reason) == (4400, "int_parsing")
