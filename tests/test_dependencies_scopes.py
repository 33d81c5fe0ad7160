"""``Depends(..., scope="function" | "request")``: when a yield dependency's clean-up runs,
FastAPI's error for a request-scoped dependency using a function-scoped one, and handlers
running in a copy of the test's ``contextvars`` context."""

import contextvars
from typing import Annotated

import pytest
from dependency_support import FakeHttpRequest, run

from ferrosock import App, Depends, Request, WebSocket
from ferrosock.exceptions import DependencyScopeError, HTTPException
from ferrosock.testclient import TestClient

current_user: contextvars.ContextVar[str] = contextvars.ContextVar("current_user")


def scoped_app(events: list) -> App:
    def function_scoped():
        events.append("function start")
        yield "f"
        events.append("function end")

    def request_scoped():
        events.append("request start")
        yield "r"
        events.append("request end")

    FunctionDep = Annotated[str, Depends(function_scoped, scope="function")]
    RequestDep = Annotated[str, Depends(request_scoped, scope="request")]

    app = App()

    @app.get("/http")
    def http_endpoint(f: FunctionDep, r: RequestDep):
        events.append("endpoint")
        return {"f": f, "r": r}

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket, f: FunctionDep, r: RequestDep):
        await websocket.accept()
        await websocket.send_json({"f": f, "r": r})
        events.append("endpoint")

    @app.websocket("/whoami")
    async def whoami(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text(current_user.get("nobody"))

    @app.get("/whoami")
    def whoami_http():
        return {"user": current_user.get("nobody")}

    return app


def test_function_scope_ends_before_the_response_is_sent_and_request_scope_after_it():
    events = []
    app = scoped_app(events)
    route = next(route for route in app.routes if route.path == "/http")

    def respond(response):
        events.append(f"sent {response.body.decode()}")

    run(route.handle(Request(FakeHttpRequest(path="/http"), app), respond))
    assert events == [
        "function start",
        "request start",
        "endpoint",
        "function end",
        'sent {"f":"f","r":"r"}',
        "request end",
    ]


def test_scoped_clean_up_runs_on_a_real_request_too():
    events = []
    with TestClient(scoped_app(events)) as client:
        assert client.get("/http").json() == {"f": "f", "r": "r"}
    assert events[-2:] == ["function end", "request end"]


def test_websocket_function_scope_ends_before_request_scope():
    events = []
    with TestClient(scoped_app(events)) as client:
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_json() == {"f": "f", "r": "r"}
    assert events[-3:] == ["endpoint", "function end", "request end"]


def raise_after_yield():
    yield
    raise HTTPException(status_code=503, detail="clean-up failed")


def test_function_scoped_clean_up_can_still_change_the_response():
    app = App(dependencies=[Depends(raise_after_yield, scope="function")])

    @app.get("/")
    def endpoint():
        return {"status": "ok"}

    with TestClient(app) as client:
        response = client.get("/")
    assert (response.status_code, response.json()) == (503, {"detail": "clean-up failed"})


def test_request_scoped_clean_up_runs_after_the_response_was_sent():
    app = App(dependencies=[Depends(raise_after_yield, scope="request")])
    responses = []

    @app.get("/")
    def endpoint():
        return {"status": "ok"}

    route = app.routes[0]
    with pytest.raises(HTTPException):
        run(route.handle(Request(FakeHttpRequest(), app), responses.append))
    assert [(r.status_code, r.body) for r in responses] == [(200, b'{"status":"ok"}')]
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_request_scoped_dependency_may_not_use_a_function_scoped_one():
    def inner():
        yield "inner"

    def outer(value: Annotated[str, Depends(inner, scope="function")]):
        yield value

    app = App()
    with pytest.raises(DependencyScopeError) as caught:

        @app.get("/")
        def endpoint(value: Annotated[str, Depends(outer, scope="request")]): ...

    assert str(caught.value) == (
        'The dependency "outer" has a scope of "request", it cannot depend on dependencies '
        'with scope "function".'
    )
    assert isinstance(caught.value, RuntimeError)


def test_function_scoped_dependency_may_use_a_request_scoped_one():
    def inner():
        yield "inner"

    def outer(value: Annotated[str, Depends(inner, scope="request")]):
        yield value

    app = App()

    @app.get("/")
    def endpoint(value: Annotated[str, Depends(outer, scope="function")]):
        return value

    with TestClient(app) as client:
        assert client.get("/").json() == "inner"


def test_unknown_scope_is_rejected():
    with pytest.raises(ValueError, match="'session'"):
        Depends(lambda: None, scope="session")


def test_handlers_see_the_context_variables_the_test_set():
    app = scoped_app([])
    with TestClient(app) as client:
        token = current_user.set("ada")
        try:
            with client.websocket_connect("/whoami") as websocket:
                assert websocket.receive_text() == "ada"
            assert client.get("/whoami").json() == {"user": "ada"}
        finally:
            current_user.reset(token)
        with client.websocket_connect("/whoami") as websocket:
            assert websocket.receive_text() == "nobody"
