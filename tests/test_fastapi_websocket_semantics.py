"""Starlette's WebSocket semantics, through ``TestClient`` and the real engine: the
handshake's answers (errors, refusals, denial responses), ``receive`` before ``accept``,
the scope mapping and the state errors."""

import pytest

from ferrosock import App, WebSocket, WebSocketDisconnect, WebSocketState
from ferrosock.exceptions import WebSocketException
from ferrosock.responses import JSONResponse, PlainTextResponse
from ferrosock.testclient import TestClient, WebSocketDenialResponse


class TenantMissing(Exception):
    pass


def semantics_app(seen: list) -> App:
    app = App()

    @app.websocket("/crash-before-accept")
    async def crash_before_accept(websocket: WebSocket):
        raise TenantMissing("tenant 7")

    @app.websocket("/close-before-accept")
    async def close_before_accept(websocket: WebSocket):
        await websocket.close(code=4002, reason="go away")

    @app.websocket("/state-after-refusal")
    async def state_after_refusal(websocket: WebSocket):
        await websocket.close(code=4000)
        seen.append(websocket.application_state)

    @app.websocket("/refuse-with-exception")
    async def refuse_with_exception(websocket: WebSocket):
        raise WebSocketException(code=4001, reason="no token")

    @app.websocket("/returns-without-accepting")
    async def returns_without_accepting(websocket: WebSocket):
        pass

    @app.websocket("/denied")
    async def denied(websocket: WebSocket):
        response = JSONResponse({"why": "banned"}, status_code=401, headers={"x-reason": "ban"})
        await websocket.send_denial_response(response)

    @app.websocket("/connect-message")
    async def connect_message(websocket: WebSocket):
        first = await websocket.receive()
        try:
            await websocket.receive()
        except RuntimeError as exc:
            second = str(exc)
        await websocket.accept()
        await websocket.send_json({"first": first, "second": second})

    @app.websocket("/scope/{room}")
    async def scope_mapping(websocket: WebSocket):
        await websocket.accept(subprotocol="chat")
        await websocket.send_json(
            {
                "path": websocket["path"],
                "subprotocols": websocket["subprotocols"],
                "type": websocket.scope["type"],
                "room": websocket["path_params"]["room"],
                "keys_match": sorted(websocket) == sorted(websocket.scope),
                "is_mapping_of_scope": dict(websocket) == websocket.scope,
            }
        )

    @app.websocket("/close-twice")
    async def close_twice(websocket: WebSocket):
        await websocket.accept()
        await websocket.close()
        try:
            await websocket.close()
        except RuntimeError as exc:
            seen.append(str(exc))

    @app.websocket("/receive-after-disconnect")
    async def receive_after_disconnect(websocket: WebSocket):
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        try:
            await websocket.receive()
        except RuntimeError as exc:
            seen.append(str(exc))

    @app.websocket("/send-nothing")
    async def send_nothing(websocket: WebSocket):
        await websocket.accept()
        try:
            await websocket.send({"type": "websocket.send"})
        except RuntimeError as exc:
            await websocket.send_text(str(exc))

    @app.websocket("/denial-after-accept")
    async def denial_after_accept(websocket: WebSocket):
        await websocket.accept()
        try:
            await websocket.send_denial_response(PlainTextResponse("late", status_code=400))
        except RuntimeError as exc:
            await websocket.send_text(str(exc))

    return app


@pytest.fixture(scope="module")
def seen():
    return []


@pytest.fixture(scope="module")
def client(seen):
    with TestClient(semantics_app(seen)) as client:
        yield client


def refusal(client, path) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect(path):
            pytest.fail(f"{path} was accepted")  # pragma: no cover
    return caught.value


# -- Answers to the handshake ---------------------------------------------------------------


def test_exception_before_accept_reaches_the_test_as_itself(client):
    with pytest.raises(TenantMissing, match="tenant 7"):
        with client.websocket_connect("/crash-before-accept"):
            pytest.fail("accepted")  # pragma: no cover


def test_exception_before_accept_without_raise_server_exceptions_is_a_failed_handshake(seen):
    with TestClient(semantics_app(seen), raise_server_exceptions=False) as client:
        caught = refusal(client, "/crash-before-accept")
    assert caught.code == 1011
    assert "HTTP 500" in caught.reason


def test_close_before_accept_reaches_the_test_with_its_code_and_reason(client):
    caught = refusal(client, "/close-before-accept")
    assert (caught.code, caught.reason) == (4002, "go away")


def test_refused_handshake_leaves_the_application_state_disconnected(client, seen):
    seen.clear()
    assert refusal(client, "/state-after-refusal").code == 4000
    client.get("/no-such-page")  # a round trip, by which the handler has run on
    assert seen == [WebSocketState.DISCONNECTED]


def test_websocket_exception_before_accept_reaches_the_test_with_its_code_and_reason(client):
    caught = refusal(client, "/refuse-with-exception")
    assert (caught.code, caught.reason) == (4001, "no token")


def test_path_without_route_is_refused_with_1000(client):
    caught = refusal(client, "/no/such/route")
    assert (caught.code, caught.reason) == (1000, "")


def test_handler_returning_without_accept_refuses_with_1000(client):
    caught = refusal(client, "/returns-without-accepting")
    assert caught.code == 1000


def test_denial_response_is_raised_with_its_status_headers_and_body(client):
    with pytest.raises(WebSocketDenialResponse) as caught:
        with client.websocket_connect("/denied"):
            pytest.fail("accepted")  # pragma: no cover
    response = caught.value
    assert isinstance(response, WebSocketDisconnect)
    assert response.status_code == 401
    assert response.headers["x-reason"] == "ban"
    assert response.json() == {"why": "banned"}


def test_denial_response_after_accept_is_a_runtime_error(client):
    with client.websocket_connect("/denial-after-accept") as websocket:
        assert "before accept()" in websocket.receive_text()


# -- Receive before accept, the scope -------------------------------------------------------


def test_receive_before_accept_returns_the_connect_message_once(client):
    with client.websocket_connect("/connect-message") as websocket:
        got = websocket.receive_json()
    assert got["first"] == {"type": "websocket.connect"}
    assert got["second"] == 'WebSocket is not connected. Need to call "accept" first.'


def test_websocket_is_a_read_only_mapping_over_its_scope(client):
    with client.websocket_connect("/scope/lobby", subprotocols=["chat"]) as websocket:
        assert websocket.receive_json() == {
            "path": "/scope/lobby",
            "subprotocols": ["chat"],
            "type": "websocket",
            "room": "lobby",
            "keys_match": True,
            "is_mapping_of_scope": True,
        }


# -- State errors -----------------------------------------------------------------------------


def test_second_close_is_a_runtime_error(client, seen):
    seen.clear()
    with client.websocket_connect("/close-twice") as websocket:
        with pytest.raises(WebSocketDisconnect):
            websocket.receive_text()
    assert seen == ['Cannot call "send" once a close message has been sent.']


def test_receive_after_the_disconnect_was_reported_is_a_runtime_error(client, seen):
    seen.clear()
    with client.websocket_connect("/receive-after-disconnect") as websocket:
        websocket.close(1001)
    assert seen == [1001, 'Cannot call "receive" once a disconnect message has been received.']


def test_send_message_without_text_or_bytes_is_a_runtime_error(client):
    with client.websocket_connect("/send-nothing") as websocket:
        assert "needs a" in websocket.receive_text()
