"""``--workers N``: N forked processes share one port through SO_REUSEPORT, and a SIGTERM
to the supervisor shuts every worker down gracefully."""

from __future__ import annotations

import asyncio
import signal
import socket

from core_server import REPO_DIR, ServerProcess
from websockets.asyncio.client import connect

WORKERS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_workers_share_the_port_and_stop_together():
    port = free_port()
    server = ServerProcess(
        "examples.echo:app", "--port", str(port), "--workers", str(WORKERS), cwd=REPO_DIR
    ).start()
    try:
        # Every worker announces itself once it listens.
        await asyncio.to_thread(
            server.wait_for_stderr,
            lambda line: server.output().count("running on") >= WORKERS,
            10.0,
        )
        for index in range(8):
            async with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as websocket:
                await websocket.send(f"hello {index}")
                assert await asyncio.wait_for(websocket.recv(), 5) == f"hello {index}"
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 10.0) == 0
        output = server.output()
        assert output.count("Finished server process") == WORKERS, output
        assert "Traceback" not in output, output
    finally:
        server.stop()
