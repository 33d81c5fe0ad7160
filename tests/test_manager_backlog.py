"""A publisher faster than the fan-out waits in ``broadcast``: the bytes queued for fan-out
stay under the manager's ``backlog_limit`` instead of growing with every broadcast."""

from __future__ import annotations

import pytest
from core_server import ServerProcess
from core_support import http_get
from websockets.asyncio.client import connect

MEMBERS = 100
BROADCASTS = 3000
SIZE = 1024


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server("apps.backlog:app", "--ws-ping-interval", "0")


async def test_fast_publisher_waits_instead_of_growing_the_fanout_queue(server):
    members = [await connect(server.ws_url("/member"), open_timeout=10) for _ in range(MEMBERS)]
    try:
        joined = await http_get(server.port, f"/members?at_least={MEMBERS}")
        assert joined.json()["members"] == MEMBERS, joined
        response = await http_get(server.port, f"/flood?count={BROADCASTS}&size={SIZE}")
        assert response.status == 200, response
        result = response.json()
        # Unbounded, the queue would reach BROADCASTS * SIZE (3 MB) less what was fanned out.
        assert result["peak_backlog"] <= result["limit"] + SIZE, result
    finally:
        # The members stopped reading long ago: drop them rather than wait out a close.
        for member in members:
            member.transport.abort()
