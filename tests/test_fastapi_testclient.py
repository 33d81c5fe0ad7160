"""``TestClient`` against the real engine over loopback: lifespan, HTTP requests, WebSocket
sessions, server exceptions surfacing in the test, routers and dependency overrides."""

import socket
from contextlib import asynccontextmanager

import pytest

from ferrosock import APIRouter, App, Depends, Header, Query, Request, WebSocket
from ferrosock.exceptions import HTTPException, WebSocketDisconnect, WebSocketException
from ferrosock.responses import PlainTextResponse, RedirectResponse, Response
from ferrosock.testclient import TestClient

# -- Lifespan -----------------------------------------------------------------------------


def test_lifespan_and_event_handlers_run_in_order_around_serving():
    events = []

    @asynccontextmanager
    async def lifespan(app):
        events.append("lifespan start")
        app.state.ready = True
        yield
        events.append("lifespan stop")

    app = App(lifespan=lifespan)

    @app.on_event("startup")
    async def on_startup():
        events.append("startup handler")

    @app.on_event("shutdown")
    def on_shutdown():
        events.append("shutdown handler")

    @app.get("/ready")
    async def ready(request: Request):
        events.append("request")
        return {"ready": request.app.state.ready}

    with TestClient(app) as client:
        assert events == ["startup handler", "lifespan start"]
        assert client.get("/ready").json() == {"ready": True}
    assert events == [
        "startup handler",
        "lifespan start",
        "request",
        "lifespan stop",
        "shutdown handler",
    ]


def test_failing_lifespan_startup_raises_from_the_client():
    @asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("database unreachable")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="database unreachable"):
        with TestClient(App(lifespan=lifespan)):
            pass  # pragma: no cover


def test_close_stops_the_server():
    app = App()

    @app.get("/")
    async def root():
        return "up"

    client = TestClient(app)
    assert client.get("/").json() == "up"
    port = client.port
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- HTTP ---------------------------------------------------------------------------------


def echo_app() -> App:
    app = App()

    @app.api_route("/echo/{name}", methods=["GET", "POST", "PUT", "DELETE"])
    async def echo(request: Request, name: str, x_tag: str | None = Header(None)):
        return {
            "method": request.method,
            "name": name,
            "url": str(request.url),
            "query": request.query_params.multi_items(),
            "x_tag": x_tag,
            "cookies": request.cookies,
            "body": (await request.body()).decode(),
            "content_type": request.headers.get("content-type"),
            "user_agent": request.headers.get("user-agent"),
        }

    return app


def test_request_sends_method_params_headers_and_json():
    client = TestClient(echo_app())
    response = client.post(
        "/echo/alice?a=1", params={"b": ["2", "3"]}, headers={"X-Tag": "t"}, json={"k": "é"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "method": "POST",
        "name": "alice",
        "url": "http://testserver/echo/alice?a=1&b=2&b=3",
        "query": [["a", "1"], ["b", "2"], ["b", "3"]],
        "x_tag": "t",
        "cookies": {},
        "body": '{"k":"é"}',
        "content_type": "application/json",
        "user_agent": "testclient",
    }


def test_form_data_and_raw_content_bodies():
    client = TestClient(echo_app())
    form = client.put("/echo/x", data={"a": "1 2"}).json()
    assert (form["body"], form["content_type"]) == ("a=1+2", "application/x-www-form-urlencoded")
    raw = client.delete("/echo/x", content=b"raw bytes").json()
    assert (raw["method"], raw["body"]) == ("DELETE", "raw bytes")


def test_client_cookies_are_sent_and_set_cookie_is_kept():
    app = App()

    @app.get("/login")
    async def login():
        return Response(status_code=204, headers={"set-cookie": "session=s2; Path=/"})

    @app.get("/cookies")
    async def cookies(request: Request):
        return request.cookies

    client = TestClient(app, cookies={"theme": "dark"})
    assert client.get("/cookies").json() == {"theme": "dark"}
    assert client.get("/cookies", cookies={"extra": "1"}).json() == {"theme": "dark", "extra": "1"}
    client.get("/login")
    assert client.get("/cookies").json() == {"theme": "dark", "session": "s2"}


def test_redirects_are_followed_unless_disabled():
    app = App()

    @app.get("/old")
    async def old():
        return RedirectResponse("/new")

    @app.get("/new")
    async def new():
        return PlainTextResponse("arrived")

    client = TestClient(app)
    response = client.get("/old")
    assert (response.status_code, response.text) == (200, "arrived")
    not_followed = client.get("/old", follow_redirects=False)
    assert (not_followed.status_code, not_followed.headers["location"]) == (307, "/new")


def test_http_exception_and_validation_error_responses():
    app = App()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int):
        if item_id == 0:
            raise HTTPException(status_code=404, detail="Item not found")
        return {"item_id": item_id}

    client = TestClient(app)
    assert client.get("/items/3").json() == {"item_id": 3}
    missing = client.get("/items/0")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Item not found"})
    invalid = client.get("/items/x")
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_http_endpoint_exception_is_raised_in_the_test():
    app = App()

    @app.get("/broken")
    async def broken():
        raise ZeroDivisionError("handler bug")

    with pytest.raises(ZeroDivisionError, match="handler bug"):
        TestClient(app).get("/broken")


def test_http_endpoint_exception_is_a_500_without_raise_server_exceptions():
    app = App()

    @app.get("/broken")
    async def broken():
        raise ZeroDivisionError("handler bug")

    response = TestClient(app, raise_server_exceptions=False).get("/broken")
    assert response.status_code == 500


# -- WebSocket ----------------------------------------------------------------------------


def socket_app() -> App:
    app = App()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    @app.websocket("/accept-with-headers")
    async def accept_with_headers(websocket: WebSocket):
        await websocket.accept(headers=[(b"x-room", b"lobby"), (b"set-cookie", b"seat=4")])
        await websocket.send_text("welcome")

    @app.websocket("/json")
    async def json_echo(websocket: WebSocket):
        await websocket.accept()
        data = await websocket.receive_json()
        await websocket.send_json({"got": data})
        await websocket.send_json({"binary": True}, mode="binary")
        await websocket.close()

    @app.websocket("/protocols")
    async def protocols(websocket: WebSocket):
        await websocket.accept(subprotocol="chat.v2")
        await websocket.send_text(",".join(websocket.subprotocols))
        await websocket.close()

    @app.websocket("/closes")
    async def closes(websocket: WebSocket):
        await websocket.accept()
        await websocket.close(code=4000, reason="bye")

    @app.websocket("/quiet")
    async def quiet(websocket: WebSocket):
        await websocket.accept()
        await websocket.receive_text()

    @app.websocket("/silent")
    async def silent(websocket: WebSocket):
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            pass

    @app.websocket("/crashes")
    async def crashes(websocket: WebSocket):
        await websocket.accept()
        raise KeyError("handler bug")

    @app.websocket("/rejects")
    async def rejects(websocket: WebSocket):
        raise WebSocketException(code=4403, reason="not you")

    @app.websocket("/closes-with-exception")
    async def closes_with_exception(websocket: WebSocket):
        await websocket.accept()
        raise WebSocketException(code=4001, reason="policy")

    @app.websocket("/whoami")
    async def whoami(websocket: WebSocket, user_agent: str = Header(), token: str = Query()):
        await websocket.accept()
        await websocket.send_json(
            {"user_agent": user_agent, "token": token, "cookies": websocket.cookies}
        )
        await websocket.close()

    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(socket_app()) as client:
        yield client


def test_text_and_bytes_round_trip(client):
    with client.websocket_connect("/echo") as websocket:
        websocket.send_text("hello")
        assert websocket.receive_text() == "hello"
        websocket.send_bytes(b"\x00\x01")
        assert websocket.receive_bytes() == b"\x00\x01"
        websocket.send_text("as dict")
        assert websocket.receive() == {"type": "websocket.send", "text": "as dict"}


def test_session_send_takes_an_asgi_message(client):
    with client.websocket_connect("/echo") as websocket:
        websocket.send({"type": "websocket.receive", "text": "as text"})
        assert websocket.receive_text() == "as text"
        websocket.send({"type": "websocket.receive", "bytes": b"\x02"})
        assert websocket.receive_bytes() == b"\x02"
        with pytest.raises(ValueError, match=r"'websocket\.send'"):
            websocket.send({"type": "websocket.send", "text": "wrong direction"})
        websocket.send({"type": "websocket.disconnect", "code": 1000})


def test_extra_headers_are_the_headers_given_to_accept(client):
    with client.websocket_connect("/accept-with-headers") as websocket:
        assert websocket.extra_headers == [(b"x-room", b"lobby"), (b"set-cookie", b"seat=4")]
        assert websocket.receive_text() == "welcome"
    with client.websocket_connect("/echo") as websocket:
        assert websocket.extra_headers == []


def test_json_in_text_and_binary_modes(client):
    with client.websocket_connect("/json") as websocket:
        websocket.send_json({"a": [1, "é"]})
        assert websocket.receive_json() == {"got": {"a": [1, "é"]}}
        assert websocket.receive_json(mode="binary") == {"binary": True}


def test_receiving_the_wrong_kind_says_what_arrived(client):
    with client.websocket_connect("/echo") as websocket:
        websocket.send_bytes(b"x")
        with pytest.raises(TypeError, match="expected a text message"):
            websocket.receive_text()


def test_subprotocol_is_negotiated(client):
    with client.websocket_connect("/protocols", subprotocols=["chat.v1", "chat.v2"]) as websocket:
        assert websocket.accepted_subprotocol == "chat.v2"
        assert websocket.receive_text() == "chat.v1,chat.v2"


def test_server_close_raises_disconnect_with_code_and_reason(client):
    with client.websocket_connect("/closes") as websocket:
        with pytest.raises(WebSocketDisconnect) as caught:
            websocket.receive_text()
    assert (caught.value.code, caught.value.reason) == (4000, "bye")


def test_receive_returns_the_close_as_a_message(client):
    with client.websocket_connect("/closes") as websocket:
        assert websocket.receive() == {"type": "websocket.close", "code": 4000, "reason": "bye"}


def test_receive_times_out_instead_of_hanging():
    with TestClient(socket_app(), timeout=0.3) as client:
        with client.websocket_connect("/silent") as websocket:
            with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
                websocket.receive_text()


def test_unknown_path_refuses_the_handshake_with_1000_as_starlette(client):
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/nowhere"):
            pytest.fail("connected to an unknown path")  # pragma: no cover
    assert caught.value.code == 1000


def test_websocket_exception_before_accept_refuses_the_handshake(client):
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/rejects"):
            pytest.fail("connected despite the refusal")  # pragma: no cover
    assert (caught.value.code, caught.value.reason) == (4403, "not you")


def test_websocket_exception_after_accept_closes_with_its_code(client):
    with client.websocket_connect("/closes-with-exception") as websocket:
        with pytest.raises(WebSocketDisconnect) as caught:
            websocket.receive_text()
    assert (caught.value.code, caught.value.reason) == (4001, "policy")


def test_handler_exception_is_raised_from_receive(client):
    with client.websocket_connect("/crashes") as websocket:
        with pytest.raises(KeyError, match="handler bug"):
            websocket.receive_text()


def test_handler_exception_is_a_1011_close_without_raise_server_exceptions():
    with TestClient(socket_app(), raise_server_exceptions=False) as client:
        with client.websocket_connect("/crashes") as websocket:
            with pytest.raises(WebSocketDisconnect) as caught:
                websocket.receive_text()
    assert caught.value.code == 1011


def test_disconnect_the_handler_lets_escape_is_raised_when_the_block_ends(client):
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/quiet"):
            pass


def test_handler_that_ends_cleanly_raises_nothing_when_the_block_ends(client):
    with client.websocket_connect("/echo") as websocket:
        websocket.send_text("one")
        assert websocket.receive_text() == "one"


def test_handshake_carries_headers_query_and_cookies():
    with TestClient(socket_app(), cookies={"session": "abc"}) as client:
        url = "/whoami?token=t1"
        with client.websocket_connect(url, headers={"User-Agent": "custom"}) as websocket:
            assert websocket.receive_json() == {
                "user_agent": "custom",
                "token": "t1",
                "cookies": {"session": "abc"},
            }


def test_missing_query_parameter_refuses_the_handshake(client):
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/whoami"):
            pytest.fail("connected without the required token")  # pragma: no cover
    assert caught.value.code == 1008


# -- Routers and overrides through the server ---------------------------------------------


def test_included_router_serves_under_its_prefix():
    router = APIRouter(prefix="/rooms")

    @router.websocket("/{room_id}")
    async def room(websocket: WebSocket, room_id: int):
        await websocket.accept()
        await websocket.send_json({"room_id": room_id})
        await websocket.close()

    @router.get("/{room_id}/info")
    async def info(room_id: int):
        return {"room_id": room_id}

    app = App()
    app.include_router(router, prefix="/api")
    with TestClient(app) as client:
        with client.websocket_connect("/api/rooms/7") as websocket:
            assert websocket.receive_json() == {"room_id": 7}
        assert client.get("/api/rooms/8/info").json() == {"room_id": 8}
        assert client.get("/rooms/8/info").status_code == 404


def test_dependency_override_applies_to_live_connections():
    def current_user(token: str = Query()):
        return f"user for {token}"

    app = App()

    @app.websocket("/me")
    async def me(websocket: WebSocket, user: str = Depends(current_user)):
        await websocket.accept()
        await websocket.send_text(user)
        await websocket.close()

    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/me"):
                pass  # pragma: no cover
        app.dependency_overrides[current_user] = lambda: "test user"
        with client.websocket_connect("/me") as websocket:
            assert websocket.receive_text() == "test user"
