"""``metrics_path`` serves the engine's and the managers' counters in the Prometheus text
format; the figures move as clients connect, send and leave."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from core_server import TESTS_DIR
from core_support import handshake_headers, http_request, raw_handshake
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from ferrosock import App, WebSocket
from ferrosock.testclient import TestClient

TIMEOUT = 5.0


async def scrape(server) -> dict[tuple[str, tuple], float]:
    response = await http_request(server.port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape_until(server, predicate, what: str) -> dict[tuple[str, tuple], float]:
    """Scrape until ``predicate`` holds for the samples (at most ``TIMEOUT`` seconds)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        samples = await scrape(server)
        if predicate(samples):
            return samples
        assert asyncio.get_running_loop().time() < deadline, f"no {what} in the metrics"
        await asyncio.sleep(0.05)


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_as_clients_connect_send_and_leave(start_server):
    server = start_server(
        "apps.cluster:app", "--metrics-path", "/metrics", "--ws-ping-interval", "0.1"
    )
    before = await scrape(server)
    assert value(before, "ferrosock_open_connections") == 0
    websocket = await connect(server.ws_url("/ws/lobby"), open_timeout=TIMEOUT)
    await websocket.recv()  # {"id": ...}
    payload = "x" * 1000
    for _ in range(3):
        await websocket.send(json.dumps({"broadcast": payload}))
        assert await asyncio.wait_for(websocket.recv(), TIMEOUT) == payload
    during = await scrape_until(
        server, lambda m: value(m, "ferrosock_ping_rtt_seconds_count") >= 1, "a pong"
    )
    assert value(during, "ferrosock_open_connections") == 1
    assert value(during, "ferrosock_connections_opened_total") == 1
    assert value(during, "ferrosock_messages_received_total") == 3
    assert value(during, "ferrosock_bytes_received_total") >= 3 * len(payload)
    assert value(during, "ferrosock_messages_sent_total") == 4  # the id, then 3 broadcasts
    assert value(during, "ferrosock_bytes_sent_total") >= 3 * len(payload)
    assert value(during, "ferrosock_manager_members", manager="default") == 1
    assert value(during, "ferrosock_manager_delivered_total", manager="default") == 3
    assert value(during, "ferrosock_ping_rtt_seconds_count") >= 1
    assert value(during, "ferrosock_ping_rtt_seconds_bucket", le="+Inf") == value(
        during, "ferrosock_ping_rtt_seconds_count"
    )
    await websocket.close(code=4001)
    after = await scrape_until(
        server, lambda m: value(m, "ferrosock_open_connections") == 0, "the close"
    )
    assert value(after, "ferrosock_open_connections") == 0
    assert value(after, "ferrosock_connections_closed_total") == 1
    assert value(after, "ferrosock_close_codes_total", code="4xxx") == 1
    assert value(after, "ferrosock_manager_members", manager="default") == 0


def test_app_metrics_is_a_dictionary_of_the_same_figures():
    app = App()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    before = app.metrics()
    with TestClient(app) as client, client.websocket_connect("/echo") as websocket:
        websocket.send_text("hello")
        assert websocket.receive_text() == "hello"
    after = app.metrics()
    assert after["messages_received"] == before["messages_received"] + 1
    assert after["bytes_received"] == before["bytes_received"] + 5
    assert after["close_codes"].get("1000", 0) == before["close_codes"].get("1000", 0) + 1
    assert set(after["ping_rtt"]) == {"bounds_us", "counts", "sum_us"}


def test_a_metrics_path_without_a_slash_fails_at_startup():
    result = subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", "apps.cluster:app", "--metrics-path", "x"],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "metrics_path" in result.stderr


REFUSAL_REASONS = {
    "bad_request",
    "forbidden_origin",
    "not_found",
    "over_capacity",
    "over_client_limit",
    "app_refused",
    "denial_response",
    "error",
    "shutdown",
}
ALLOWED = "http://allowed.example"


async def test_handshakes_are_counted_accepted_and_refused_by_reason(start_server):
    server = start_server(
        "apps.handshakes:app",
        "--metrics-path",
        "/metrics",
        "--max-connections",
        "2",
        "--max-connections-per-ip",
        "1",
        "--allowed-origins",
        ALLOWED,
    )
    before = await scrape(server)
    refused = {
        dict(labels)["reason"]: count
        for (name, labels), count in before.items()
        if name == "ferrosock_handshakes_refused_total"
    }
    assert refused == dict.fromkeys(REFUSAL_REASONS, 0.0)  # every reason, from the start
    assert value(before, "ferrosock_handshakes_accepted_total") == 0

    async def answer(path: str, **headers: str | None) -> int:
        headers.setdefault("Origin", ALLOWED)
        response = await raw_handshake(
            server.port, path, handshake_headers(path, server.port, **headers)
        )
        return response.status

    assert await answer("/accept", Sec_WebSocket_Key=None) == 400
    assert await answer("/accept", Origin="http://elsewhere.example") == 403
    assert await answer("/nowhere") == 403
    assert await answer("/close-before-accept") == 403
    assert await answer("/denied") == 429
    assert await answer("/crash-before-accept") == 500
    url = server.ws_url("/accept")
    async with connect(url, origin=ALLOWED, open_timeout=TIMEOUT) as held:
        await held.send("hello")
        assert await asyncio.wait_for(held.recv(), TIMEOUT) == "hello"
        assert await answer("/accept") == 429  # one per address
        # Another client address on the loopback network takes the second place.
        elsewhere = {"local_addr": ("127.0.0.2", 0)}
        async with connect(url, origin=ALLOWED, open_timeout=TIMEOUT, **elsewhere) as other:
            await other.send("hello")
            assert await asyncio.wait_for(other.recv(), TIMEOUT) == "hello"
            assert await answer("/accept") == 503  # max_connections is 2
            after = await scrape(server)
    assert value(after, "ferrosock_handshakes_accepted_total") == 2
    for reason in REFUSAL_REASONS - {"shutdown"}:
        assert value(after, "ferrosock_handshakes_refused_total", reason=reason) == 1, reason
    assert value(after, "ferrosock_handshakes_refused_total", reason="shutdown") == 0
