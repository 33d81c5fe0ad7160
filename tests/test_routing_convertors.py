"""Path convertors (``{name:int}``, ``{rest:path}`` ...) on WebSocket and HTTP routes,
through the real engine: conversion, and a value that does not fit matching no route."""

import uuid

import pytest

from ferrosock import App, WebSocket, WebSocketDisconnect
from ferrosock.requests import Request
from ferrosock.testclient import TestClient

ITEM_UUID = "0b5f4a44-7c1e-4f0e-9d55-0b6e3b3b1c2a"


def convertor_app() -> App:
    app = App()

    @app.websocket("/files/{file_path:path}")
    async def files(websocket: WebSocket, file_path: str):
        await websocket.accept()
        await websocket.send_json({"file_path": file_path})

    @app.websocket("/rooms/{room_id:int}")
    async def rooms(websocket: WebSocket):
        await websocket.accept()
        room_id = websocket.path_params["room_id"]
        await websocket.send_json({"room_id": room_id, "type": type(room_id).__name__})

    @app.get("/items/{item_id:uuid}")
    async def item(request: Request, item_id: uuid.UUID):
        converted = request.path_params["item_id"]
        return {"item_id": str(item_id), "is_uuid": isinstance(converted, uuid.UUID)}

    @app.get("/prices/{amount:float}")
    async def price(amount: float):
        return {"amount": amount}

    @app.get("/names/{name:str}")
    async def name(name: str):
        return {"name": name}

    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(convertor_app()) as client:
        yield client


def test_path_convertor_matches_across_slashes(client):
    with client.websocket_connect("/files/docs/2026/report.txt") as websocket:
        assert websocket.receive_json() == {"file_path": "docs/2026/report.txt"}


def test_int_convertor_gives_the_handler_an_int(client):
    with client.websocket_connect("/rooms/42") as websocket:
        assert websocket.receive_json() == {"room_id": 42, "type": "int"}


def test_websocket_path_that_does_not_fit_its_convertor_is_refused_as_no_route(client):
    with pytest.raises(WebSocketDisconnect) as caught:
        with client.websocket_connect("/rooms/lobby"):
            pytest.fail("accepted a room id that is not an int")  # pragma: no cover
    assert caught.value.code == 1000


def test_uuid_convertor_converts_on_http_routes(client):
    assert client.get(f"/items/{ITEM_UUID}").json() == {"item_id": ITEM_UUID, "is_uuid": True}


def test_http_path_that_does_not_fit_its_convertor_is_404(client):
    response = client.get("/items/not-a-uuid")
    assert response.status_code == 404


def test_float_convertor_takes_digits_with_a_fraction(client):
    assert client.get("/prices/9.75").json() == {"amount": 9.75}
    assert client.get("/prices/nine").status_code == 404


def test_str_convertor_is_the_default_one_segment(client):
    assert client.get("/names/ada").json() == {"name": "ada"}
    assert client.get("/names/ada/lovelace").status_code == 404
