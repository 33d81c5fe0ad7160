"""Messages, handshakes and parameters, against tests/apps/core.py on a real server."""

import json
import uuid

import pytest
from core_support import close_code_after_recv, http_get, recv
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def refused_status(url: str, **options) -> int:
    """The HTTP status of a refused handshake; fails if the server accepts it."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=10, **options):
            pass
    return refused.value.response.status_code


# -- JSON -----------------------------------------------------------------------------


async def test_send_json_is_compact_and_keeps_non_ascii(core_server):
    async with connect(core_server.ws_url("/json"), open_timeout=10) as websocket:
        await websocket.send('{"a": "é"}')
        assert await recv(websocket) == '{"a":"é"}'
        await websocket.send(json.dumps({"nested": [1, 2.5, None, True], "emoji": "🌍"}))
        assert await recv(websocket) == '{"nested":[1,2.5,null,true],"emoji":"🌍"}'


async def test_receive_json_and_send_json_in_binary_mode(core_server):
    async with connect(core_server.ws_url("/json-binary"), open_timeout=10) as websocket:
        await websocket.send('{"a": "é"}'.encode())
        answer = await recv(websocket)
        assert answer == '{"a":"é"}'.encode()


# -- handshake: subprotocols and headers ----------------------------------------------


async def test_accept_chooses_an_offered_subprotocol(core_server):
    async with connect(
        core_server.ws_url("/subprotocol"), subprotocols=["chat.v3", "chat.v2"], open_timeout=10
    ) as websocket:
        assert websocket.subprotocol == "chat.v2"
        seen = json.loads(await recv(websocket))
    assert seen["offered"] == ["chat.v3", "chat.v2"]
    assert seen["chosen"] == "chat.v2"
    assert seen["header"].replace(" ", "") == "chat.v3,chat.v2"


async def test_no_subprotocol_when_none_is_offered(core_server):
    async with connect(core_server.ws_url("/subprotocol"), open_timeout=10) as websocket:
        assert websocket.subprotocol is None
        assert "sec-websocket-protocol" not in websocket.response.headers
        seen = json.loads(await recv(websocket))
    assert seen == {"offered": [], "chosen": None, "header": None}


async def test_accept_sends_extra_headers(core_server):
    async with connect(core_server.ws_url("/subprotocol"), open_timeout=10) as websocket:
        assert websocket.response.headers["x-ferrosock-test"] == "accepted"


# -- parameters -----------------------------------------------------------------------


async def test_path_parameters_are_converted_by_annotation(core_server):
    ident = uuid.uuid4()
    url = core_server.ws_url(f"/typed/42/2.5/{ident}/alice")
    async with connect(url, open_timeout=10) as websocket:
        seen = json.loads(await recv(websocket))
    assert seen == {
        "number": ["int", 42],
        "ratio": ["float", 2.5],
        "ident": ["UUID", str(ident)],
        "name": ["str", "alice"],
    }


async def test_path_parameter_is_percent_decoded(core_server):
    url = core_server.ws_url(f"/typed/1/1.0/{uuid.uuid4()}/h%C3%A9llo%20w")
    async with connect(url, open_timeout=10) as websocket:
        seen = json.loads(await recv(websocket))
    assert seen["name"] == ["str", "héllo w"]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/typed/forty/2.5/{ident}/alice", id="int"),
        pytest.param("/typed/42/half/{ident}/alice", id="float"),
        pytest.param("/typed/42/2.5/not-a-uuid/alice", id="uuid"),
    ],
)
async def test_path_parameter_conversion_failure_refuses_handshake(core_server, path):
    url = core_server.ws_url(path.format(ident=uuid.uuid4()))
    assert await refused_status(url) == 403


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"name": "anon", "count": 1}),
        ("?name=bob", {"name": "bob", "count": 1}),
        ("?name=b%C3%B6b&count=3", {"name": "böb", "count": 3}),
    ],
)
async def test_query_parameters_with_defaults(core_server, query, expected):
    async with connect(core_server.ws_url(f"/query{query}"), open_timeout=10) as websocket:
        assert json.loads(await recv(websocket)) == expected


async def test_query_parameter_conversion_failure_refuses_handshake(core_server):
    assert await refused_status(core_server.ws_url("/query?count=many")) == 403


async def test_http_path_parameter_is_converted(core_server):
    response = await http_get(core_server.port, "/items/5")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"item_id": 5}


async def test_http_path_parameter_conversion_failure_is_422(core_server):
    response = await http_get(core_server.port, "/items/five")
    assert response.status == 422


# -- refusals and endings -------------------------------------------------------------


async def test_close_before_accept_refuses_handshake_with_403(core_server):
    assert await refused_status(core_server.ws_url("/close-before-accept")) == 403


async def test_websocket_exception_before_accept_refuses_handshake_with_403(core_server):
    assert await refused_status(core_server.ws_url("/exception-before-accept")) == 403


async def test_unknown_path_over_http_is_404(core_server):
    response = await http_get(core_server.port, "/no/such/route")
    assert response.status == 404


async def test_unknown_path_websocket_upgrade_is_403(core_server):
    assert await refused_status(core_server.ws_url("/no/such/route")) == 403


async def test_websocket_route_over_plain_http_is_not_served_by_handler(core_server):
    response = await http_get(core_server.port, "/echo")
    assert 400 <= response.status < 500


async def test_handler_returning_without_close_closes_with_1000(core_server):
    async with connect(core_server.ws_url("/return-without-close"), open_timeout=10) as websocket:
        assert await recv(websocket) == "bye"
        assert await close_code_after_recv(websocket) == 1000


async def test_close_from_handler_reaches_client_with_1000(core_server):
    async with connect(core_server.ws_url("/accept-and-close"), open_timeout=10) as websocket:
        assert await close_code_after_recv(websocket) == 1000
