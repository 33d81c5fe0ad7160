"""Instructions ferrosock executes per echoed message, counted by callgrind.

CPU time on a shared machine moves 20-40% between runs; instruction counts do not. This
runs an echo server under ``valgrind --tool=callgrind`` (one IO thread, no pings, no access
log, asyncio's loop or ``--loop uvloop``, a fixed hash seed) and drives it from this
process with the ``websockets`` client: a warm-up, then ``LOW`` or ``HIGH`` messages per
connection, one in flight on each. The server's instruction total of the ``LOW`` run is
taken from that of the ``HIGH`` run, so start-up, warm-up and shutdown cancel out, and
what is left is divided by the messages that made the difference.

    python3 bench/instructions.py VENV_A/bin/python VENV_B/bin/python --repeat 2

Each interpreter named must have ferrosock installed; runs alternate between them. Needs
valgrind. User-space instructions only: the kernel's share of each message is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

ECHO_APP = """\
from ferrosock import App, WebSocket

app = App()


@app.websocket("/echo")
async def echo(websocket: WebSocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)
"""
WARMUP = 20
START_TIMEOUT = 180.0  # Python's start-up under valgrind takes a while


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def echo_load(port: int, connections: int, messages: int, size: int) -> None:
    payload = "x" * size
    sockets = [
        await connect(f"ws://127.0.0.1:{port}/echo", open_timeout=60, max_size=None)
        for _ in range(connections)
    ]

    async def exchange(websocket) -> None:
        for _ in range(messages):
            await websocket.send(payload)
            assert await websocket.recv() == payload

    await asyncio.gather(*(exchange(websocket) for websocket in sockets))
    for websocket in sockets:
        await websocket.close()


def wait_until_listening(server: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{server.communicate()[1]}") from None
            time.sleep(0.5)


def instructions(
    python: str, workdir: Path, connections: int, messages: int, size: int, loop: str
) -> int:
    """The server's user-space instruction total for one run of ``messages`` echoes."""
    port = free_port()
    out = workdir / f"callgrind.{port}"
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            python,
            "-m",
            "ferrosock",
            "run",
            "echo_app:app",
            "--port",
            str(port),
            "--io-threads",
            "1",
            "--ws-ping-interval",
            "0",
            "--no-access-log",
            "--log-level",
            "warning",
            "--loop",
            loop,
        ],
        cwd=workdir,
        env=dict(os.environ, PYTHONHASHSEED="0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_listening(server, port)
        asyncio.run(echo_load(port, connections, WARMUP, size))
        asyncio.run(echo_load(port, connections, messages, size))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
    total = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.MULTILINE)
    out.unlink()
    assert total, f"no total in callgrind's output {out}"
    return int(total.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+", help="interpreters with ferrosock installed")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="bytes of ASCII text per message")
    parser.add_argument("--low", type=int, default=1000, help="messages per connection, short run")
    parser.add_argument("--high", type=int, default=6000, help="messages per connection, long run")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        (workdir / "echo_app.py").write_text(ECHO_APP)
        for _ in range(args.repeat):
            for python in args.pythons:
                low, high = (
                    instructions(python, workdir, args.connections, n, args.size, args.loop)
                    for n in (args.low, args.high)
                )
                per = (high - low) / ((args.high - args.low) * args.connections)
                print(
                    f"{python}: {args.connections} connection(s), {args.size} B, {args.loop}: "
                    f"{per:.0f} instructions per echoed message",
                    flush=True,
                )


if __name__ == "__main__":
    main()
