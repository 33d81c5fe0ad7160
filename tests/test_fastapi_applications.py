"""``App``: what it stores, its lifespan context, and its delegation to the router."""

from contextlib import asynccontextmanager

import pytest
from dependency_support import run

from ferrosock import App, FastAPI
from ferrosock.datastructures import State
from ferrosock.routing import APIRouter
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
