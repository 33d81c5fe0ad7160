"""``Request`` and ``WebSocket`` read the request through one ``HTTPConnection``: the same
headers give the same cookies, and both are mappings over their scope."""

from __future__ import annotations

import json

from core_support import http_request
from websockets.asyncio.client import connect

from ferrosock import Request, WebSocket
from ferrosock.requests import HTTPConnection

TWO_COOKIE_HEADERS = [("Cookie", "a=1; b=2"), ("Cookie", "c=3")]


async def test_both_see_every_cookie_header_the_same_way(start_server):
    server = start_server("apps.deploy:app")
    async with connect(
        server.ws_url("/cookies"), additional_headers=TWO_COOKIE_HEADERS, open_timeout=5
    ) as websocket:
        seen_by_websocket = json.loads(await websocket.recv())
    response = await http_request(server.port, "/cookies", headers={"Cookie": "a=1; b=2"})
    assert seen_by_websocket == {
        "cookies": {"a": "1", "b": "2", "c": "3"},
        "path": "/cookies",
        "type": "websocket",
    }
    assert response.json() == {"cookies": {"a": "1", "b": "2"}, "path": "/cookies", "type": "http"}


def test_request_and_websocket_share_the_base():
    assert issubclass(Request, HTTPConnection) and issubclass(WebSocket, HTTPConnection)
    shared = {"headers", "query_params", "path_params", "cookies", "url", "client", "scope"}
    for name in shared:
        assert name not in vars(Request) and name not in vars(WebSocket), name
