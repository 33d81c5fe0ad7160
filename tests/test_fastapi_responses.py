"""Responses carry status, body and headers (content-type, never content-length), and
``status`` names the codes as Starlette does."""

import dataclasses
import datetime
import decimal
import enum
import uuid

import pytest

from ferrosock import status
from ferrosock.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)


def test_plain_response_has_no_content_type_unless_given():
    response = Response(b"raw", status_code=202)
    assert (response.status_code, response.body, response.raw_headers) == (202, b"raw", [])
    assert Response("x", media_type="application/octet-stream").raw_headers == [
        ("content-type", "application/octet-stream")
    ]


def test_text_responses_declare_utf8():
    assert HTMLResponse("<p>é</p>").raw_headers == [("content-type", "text/html; charset=utf-8")]
    assert PlainTextResponse("é").body == "é".encode()
    assert PlainTextResponse("x").headers["content-type"] == "text/plain; charset=utf-8"


def test_json_response_is_compact_and_keeps_unicode():
    response = JSONResponse({"a": [1, 2], "name": "Zoë"})
    assert response.body == '{"a":[1,2],"name":"Zoë"}'.encode()
    assert response.media_type == "application/json"
    assert response.raw_headers == [("content-type", "application/json")]


def test_json_response_refuses_nan():
    with pytest.raises(ValueError):
        JSONResponse(float("nan"))


def test_json_response_encodes_common_python_values():
    class Color(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    value = {
        "id": uuid.UUID(int=1),
        "when": datetime.date(2024, 1, 2),
        "color": Color.RED,
        "point": Point(1, 2),
        "price": decimal.Decimal("2.50"),
        "count": decimal.Decimal("3"),
    }
    assert JSONResponse(value).body == (
        b'{"id":"00000000-0000-0000-0000-000000000001","when":"2024-01-02","color":"red",'
        b'"point":{"x":1,"y":2},"price":2.5,"count":3}'
    )


def test_json_response_rejects_unknown_objects():
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        JSONResponse(object())


def test_given_headers_are_kept_and_content_type_not_doubled():
    response = HTMLResponse("x", headers={"X-Frame": "deny", "Content-Type": "text/html"})
    assert response.raw_headers == [("x-frame", "deny"), ("content-type", "text/html")]


def test_no_response_sets_content_length():
    for response in (Response(b"x"), HTMLResponse("x"), JSONResponse(1), RedirectResponse("/")):
        assert "content-length" not in response.headers


def test_redirect_response_defaults_to_307_and_quotes_location():
    response = RedirectResponse("/items/a b?q=1")
    assert response.status_code == 307
    assert response.body == b""
    assert response.headers["location"] == "/items/a%20b?q=1"
    assert RedirectResponse("/", status_code=302).status_code == 302


def test_status_names_match_starlette():
    assert status.WS_1000_NORMAL_CLOSURE == 1000
    assert status.WS_1008_POLICY_VIOLATION == 1008
    assert status.WS_1011_INTERNAL_ERROR == 1011
    assert status.WS_1012_SERVICE_RESTART == 1012
    assert status.WS_1013_TRY_AGAIN_LATER == 1013
    assert status.WS_1014_BAD_GATEWAY == 1014
    assert status.WS_1015_TLS_HANDSHAKE == 1015
    assert status.HTTP_200_OK == 200
    assert status.HTTP_422_UNPROCESSABLE_ENTITY == 422
    assert status.HTTP_503_SERVICE_UNAVAILABLE == 503


def test_every_status_name_carries_its_own_number():
    for name in dir(status):
        if name.startswith(("HTTP_", "WS_")):
            assert getattr(status, name) == int(name.split("_")[1]), name
