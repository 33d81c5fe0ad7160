import importlib

import pytest

from ferrosock.testclient import TestClient
from ferrosock.websockets import WebSocketDisconnect


@pytest.fixture(name="app", params=["tutorial002", "tutorial002_an"])
def get_app(request: pytest.FixtureRequest):
    module = importlib.import_module(f"{__package__}.{request.param}")
    return module.app


def test_main(app):
    client = TestClient(app)
    response = client.get("/")
    assert response.status_code == 200, response.text
    assert b"<!DOCTYPE html>" in response.content


def test_websocket_with_cookie(app):
    client = TestClient(app, cookies={"session": "fakesession"})
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/items/foo/ws") as websocket:
            message = "Message one"
            websocket.send_text(message)
            data = websocket.receive_text()
            assert data == "Session cookie or query token value is: fakesession"
            data = websocket.receive_text()
            assert data == f"Message text was: {message}, for item ID: foo"
            message = "Message two"
            websocket.send_text(message)
            data = websocket.receive_text()
            assert data == "Session cookie or query token value is: fakesession"
            data = websocket.receive_text()
            assert data == f"Message text was: {message}, for item ID: foo"
    assert caught.value.code == 1000  # the client's close, not a refusal


def test_websocket_with_header_and_query(app):
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/items/2/ws?q=3&token=some-token") as websocket:
            message = "Message one"
            websocket.send_text(message)
            data = websocket.receive_text()
            assert data == "Session cookie or query token value is: some-token"
            data = websocket.receive_text()
            assert data == "Query parameter q is: 3"
            data = websocket.receive_text()
            assert data == f"Message text was: {message}, for item ID: 2"
            message = "Message two"
            websocket.send_text(message)
            data = websocket.receive_text()
            assert data == "Session cookie or query token value is: some-token"
            data = websocket.receive_text()
            assert data == "Query parameter q is: 3"
            data = websocket.receive_text()
            assert data == f"Message text was: {message}, for item ID: 2"
    assert caught.value.code == 1000  # the client's close, not a refusal


def test_websocket_no_credentials(app):
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/items/foo/ws"):
            pytest.fail("did not raise WebSocketDisconnect on __enter__")  # pragma: no cover
    assert caught.value.code == 1008


def test_websocket_invalid_data(app):
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/items/foo/ws?q=bar&token=some-token"):
            pytest.fail("did not raise WebSocketDisconnect on __enter__")  # pragma: no cover
    assert caught.value.code == 1008
