"""What a real client sees when the app answers a handshake without accepting it, and
what the server logs: HTTP 500 for an exception before ``accept``, 403 for a refusal (its
code and reason in the log), the app's own response for ``send_denial_response``."""

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

LOG_WAIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def server(start_server_module):
    return start_server_module("apps.handshakes:app")


async def refused_response(server, path):
    with pytest.raises(InvalidStatus) as caught:
        async with connect(server.ws_url(path), open_timeout=10):
            pytest.fail(f"{path} was accepted")  # pragma: no cover
    return caught.value.response


async def test_exception_before_accept_is_http_500_with_the_traceback_logged(server):
    response = await refused_response(server, "/crash-before-accept")
    assert response.status_code == 500
    await server.stderr_line(lambda line: "Traceback" in line, LOG_WAIT_SECONDS)
    await server.stderr_line(lambda line: "LookupError: no such tenant" in line, LOG_WAIT_SECONDS)


async def test_close_before_accept_is_403_with_code_and_reason_logged(server):
    response = await refused_response(server, "/close-before-accept")
    assert response.status_code == 403
    line = await server.stderr_line(
        lambda line: "/close-before-accept" in line and "403" in line, LOG_WAIT_SECONDS
    )
    assert "4002 go away" in line


async def test_websocket_exception_before_accept_is_403_with_code_and_reason_logged(server):
    response = await refused_response(server, "/refuse-with-exception")
    assert response.status_code == 403
    line = await server.stderr_line(
        lambda line: "/refuse-with-exception" in line and "403" in line, LOG_WAIT_SECONDS
    )
    assert "4001 no token" in line


async def test_denial_response_reaches_the_client_as_sent(server):
    response = await refused_response(server, "/denied")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.body == b"come back later"
