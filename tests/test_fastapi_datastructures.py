"""Headers, query parameters, URLs, cookies, state and ``Request``: read as Starlette's."""

import pytest
from dependency_support import FakeHttpRequest, run

from ferrosock.datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from ferrosock.requests import Request


def test_headers_are_case_insensitive_and_first_value_wins():
    headers = Headers([("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")])
    assert headers["content-type"] == "text/plain"
    assert headers["X-TAG"] == "a"
    assert headers.getlist("X-Tag") == ["a", "b"]
    assert "CONTENT-TYPE" in headers
    assert headers.get("missing") is None


def test_headers_keep_raw_pairs_and_list_lowered_keys():
    raw = [("Host", "example.com"), ("X-Tag", "a")]
    headers = Headers(raw)
    assert headers.raw == raw
    assert headers.keys() == ["host", "x-tag"]
    assert headers.items() == [("host", "example.com"), ("x-tag", "a")]
    assert len(headers) == 2


def test_headers_are_read_only():
    headers = Headers([("a", "1")])
    with pytest.raises(TypeError):
        headers["a"] = "2"  # type: ignore[index]


def test_missing_header_raises_key_error():
    with pytest.raises(KeyError):
        Headers([])["host"]


def test_query_params_give_last_value_and_keep_every_pair():
    params = QueryParams("a=1&b=2&a=3&empty=")
    assert params["a"] == "3"
    assert params.getlist("a") == ["1", "3"]
    assert params["empty"] == ""
    assert params.multi_items() == [("a", "1"), ("b", "2"), ("a", "3"), ("empty", "")]
    assert sorted(params) == ["a", "b", "empty"]
    assert str(params) == "a=1&b=2&a=3&empty="


def test_query_params_decode_percent_and_plus():
    assert QueryParams("q=hello+world%21")["q"] == "hello world!"


def test_url_parts():
    url = URL("wss://example.com:8443/items/1?q=2#top")
    assert (url.scheme, url.netloc, url.hostname, url.port) == (
        "wss",
        "example.com:8443",
        "example.com",
        8443,
    )
    assert (url.path, url.query, url.fragment) == ("/items/1", "q=2", "top")
    assert url.is_secure
    assert str(url) == "wss://example.com:8443/items/1?q=2#top"
    assert url == "wss://example.com:8443/items/1?q=2#top"


def test_url_from_parts_prefers_host_header_and_drops_default_port():
    with_host = URL.from_parts("http", Headers([("host", "testserver")]), ("127.0.0.1", 80), "/a")
    assert str(with_host) == "http://testserver/a"
    default_port = URL.from_parts("ws", Headers([]), ("10.0.0.1", 80), "/ws", "x=1")
    assert str(default_port) == "ws://10.0.0.1/ws?x=1"
    other_port = URL.from_parts("ws", Headers([]), ("10.0.0.1", 8000), "/ws")
    assert str(other_port) == "ws://10.0.0.1:8000/ws"


def test_address_is_a_host_port_pair():
    address = Address("127.0.0.1", 5000)
    assert (address.host, address.port) == ("127.0.0.1", 5000)
    host, port = address
    assert (host, port) == ("127.0.0.1", 5000)


def test_state_is_an_attribute_bag():
    state = State()
    state.db = "connection"
    assert state.db == "connection"
    del state.db
    with pytest.raises(AttributeError, match="'State' object has no attribute 'db'"):
        state.db  # noqa: B018


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("session=abc; theme=dark", {"session": "abc", "theme": "dark"}),
        ('quoted="a b"', {"quoted": "a b"}),
        ("a=1; a=2", {"a": "2"}),
        ("token=x=y", {"token": "x=y"}),
        ("", {}),
        ("lonely", {"": "lonely"}),
    ],
)
def test_parse_cookies(header, expected):
    assert parse_cookies(header) == expected


def test_request_exposes_the_parsed_request():
    http_request = FakeHttpRequest(
        "POST",
        "/items/5",
        query_string="q=1&q=2",
        headers=[("host", "testserver"), ("cookie", "session=s1"), ("x-tag", "t")],
        path_params={"item_id": "5"},
        body=b'{"name":"x"}',
    )
    app = object()
    request = Request(http_request, app)
    assert request.method == "POST"
    assert str(request.url) == "http://testserver/items/5?q=1&q=2"
    assert request.headers["X-Tag"] == "t"
    assert request.query_params.getlist("q") == ["1", "2"]
    assert request.path_params == {"item_id": "5"}
    assert request.cookies == {"session": "s1"}
    assert request.client == Address("127.0.0.1", 50000)
    assert request.app is app
    assert run(request.body()) == b'{"name":"x"}'
    assert run(request.json()) == {"name": "x"}
