"""uvicorn's proxy settings on a real ``ferrosock run``: ``X-Forwarded-For`` and
``X-Forwarded-Proto`` from a trusted peer (``proxy_headers``, ``forwarded_allow_ips``) set
the client and scheme the app, its scope and the access log see; ``root_path`` is the
prefix the app is mounted under. Every client here connects from 127.0.0.1."""

from __future__ import annotations

import json
import re

import pytest
from core_server import startup_error
from core_support import http_request, recv
from websockets.asyncio.client import connect

from ferrosock.config import Config
from ferrosock.proxies import Forwarding, TrustedProxies

TIMEOUT = 10
APP = "apps.proxied:app"
FORWARDED = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}


async def _websocket_sees(server, headers: dict[str, str] | None = None) -> dict:
    async with connect(
        server.ws_url("/ws"), additional_headers=headers, open_timeout=TIMEOUT
    ) as websocket:
        return json.loads(await recv(websocket))


async def _http_sees(server, headers: dict[str, str] | None = None) -> dict:
    response = await http_request(server.port, "/http", headers=headers)
    assert response.status == 200, response
    return response.json()


# -- which peers are trusted, and which address is the client ------------------------------


def test_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy():
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert trusted.client_host("1.2.3.4") == "1.2.3.4"
    assert trusted.client_host("1.2.3.4, 127.0.0.1") == "1.2.3.4"
    assert trusted.client_host("9.9.9.9, 1.2.3.4, 10.1.2.3, 127.0.0.1") == "1.2.3.4"
    # Every hop trusted: the leftmost, the first client named.
    assert trusted.client_host("10.0.0.5, 127.0.0.1") == "10.0.0.5"
    assert trusted.client_host(" , ") is None
    assert TrustedProxies("*").client_host("5.6.7.8, 1.2.3.4") == "5.6.7.8"


def test_trusted_peers_are_addresses_networks_or_any():
    trusted = TrustedProxies("127.0.0.1,10.0.0.0/8, 2001:db8::/32")
    assert "127.0.0.1" in trusted
    assert "::ffff:127.0.0.1" in trusted  # an IPv4 client of a dual-stack socket
    assert "10.200.0.1" in trusted
    assert "2001:db8::7" in trusted
    assert "127.0.0.2" not in trusted
    assert "::1" not in trusted
    assert "unknown" not in trusted
    only_loopback = TrustedProxies("127.0.0.1")
    assert "127.0.0.1" in only_loopback and "::ffff:127.0.0.1" in only_loopback
    assert "127.0.0.2" not in only_loopback and "::1" not in only_loopback
    assert "203.0.113.9" in TrustedProxies("*")
    assert "127.0.0.1" not in TrustedProxies("")


@pytest.mark.parametrize("value", ["127.0.0.300", "localhost", "10.0.0.1/8", "10.0.0.0/33"])
def test_a_bad_forwarded_allow_ips_names_the_setting(value):
    with pytest.raises(ValueError, match=r"forwarded_allow_ips: .* is not an IP address"):
        TrustedProxies(value)


def test_forwarded_allow_ips_is_read_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    assert Config.from_settings().forwarded_allow_ips == "10.0.0.1"
    assert Config.from_settings({"forwarded_allow_ips": "*"}).forwarded_allow_ips == "*"
    assert Forwarding.from_config(Config(proxy_headers=False)).trusted is None


# -- on a real server ----------------------------------------------------------------------


async def test_a_trusted_peer_sets_the_client_and_scheme_of_a_websocket(start_server):
    server = start_server(APP)
    seen = await _websocket_sees(server, FORWARDED)
    assert seen["client"] == ["1.2.3.4", 0]
    assert seen["scope_client"] == ["1.2.3.4", 0]
    assert seen["scope_scheme"] == "wss"
    assert seen["url"] == f"wss://127.0.0.1:{server.port}/ws"
    server.wait_for_stderr(lambda line: '1.2.3.4:0 - "WebSocket /ws" [accepted]' in line, TIMEOUT)
    server.wait_for_stderr(lambda line: '1.2.3.4:0 - "WebSocket /ws" closed' in line, TIMEOUT)
    plain = await _websocket_sees(server, {"X-Forwarded-Proto": "http"})
    assert plain["scope_scheme"] == "ws"
    assert plain["client"][0] == "127.0.0.1" and plain["client"][1] != 0


async def test_a_trusted_peer_sets_the_client_and_scheme_of_an_http_request(start_server):
    server = start_server(APP)
    seen = await _http_sees(server, FORWARDED)
    assert seen["client"] == ["1.2.3.4", 0]
    assert seen["scope_client"] == ["1.2.3.4", 0]
    assert seen["scope_scheme"] == "https"
    assert seen["url"] == f"https://127.0.0.1:{server.port}/http"
    server.wait_for_stderr(lambda line: '1.2.3.4:0 - "GET /http HTTP/1.1" 200' in line, TIMEOUT)


async def test_a_chain_of_proxies_yields_the_client_before_the_trusted_ones(start_server):
    server = start_server(APP)
    chain = {"X-Forwarded-For": "1.2.3.4, 127.0.0.1"}
    assert (await _websocket_sees(server, chain))["client"] == ["1.2.3.4", 0]
    assert (await _http_sees(server, chain))["client"] == ["1.2.3.4", 0]


async def _assert_headers_ignored(server) -> None:
    for seen, scheme in (
        (await _websocket_sees(server, FORWARDED), "ws"),
        (await _http_sees(server, FORWARDED), "http"),
    ):
        host, port = seen["client"]
        assert host == "127.0.0.1" and port != 0, seen
        assert seen["scope_client"] == seen["client"]
        assert seen["scope_scheme"] == scheme
        assert seen["url"].startswith(f"{scheme}://")
    logged = re.compile(r'127\.0\.0\.1:\d+ - "GET /http HTTP/1\.1" 200').search
    server.wait_for_stderr(logged, TIMEOUT)
    assert "1.2.3.4" not in "\n".join(server.stderr_lines)


async def test_an_untrusted_peers_headers_are_ignored(start_server):
    await _assert_headers_ignored(start_server(APP, "--forwarded-allow-ips", "10.0.0.1"))


async def test_no_proxy_headers_ignores_them(start_server):
    await _assert_headers_ignored(start_server(APP, "--no-proxy-headers"))


async def test_root_path_is_in_the_scope_and_the_url(start_server):
    server = start_server(APP, "--root-path", "/api")
    seen = await _websocket_sees(server)
    assert seen["root_path"] == "/api"
    assert seen["path"] == "/api/ws"
    assert seen["url"] == f"ws://127.0.0.1:{server.port}/api/ws"
    seen = await _http_sees(server)
    assert seen["root_path"] == "/api"
    assert seen["path"] == "/api/http"
    assert seen["url"] == f"http://127.0.0.1:{server.port}/api/http"
    server.wait_for_stderr(lambda line: '"GET /api/http HTTP/1.1" 200' in line, TIMEOUT)


async def test_without_root_path_the_scope_says_so(start_server):
    seen = await _http_sees(start_server(APP))
    assert seen["root_path"] == "" and seen["path"] == "/http"


@pytest.mark.parametrize(
    ("flag", "value", "named", "culprit"),
    [
        ("--forwarded-allow-ips", "127.0.0.1,not-an-address", "forwarded_allow_ips", "not-an"),
        ("--forwarded-allow-ips", "10.0.0.1/8", "forwarded_allow_ips", "host bits set"),
        ("--root-path", "api/", "root_path", "'api/'"),
    ],
)
def test_a_bad_setting_fails_at_startup_with_one_line_naming_it(flag, value, named, culprit):
    line = startup_error(APP, flag, value)
    assert named in line and culprit in line, line
