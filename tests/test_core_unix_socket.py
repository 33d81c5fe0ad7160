"""``--uds PATH``: serve on a Unix socket file, as behind nginx on the same machine; alone,
with ``--workers`` (the supervisor binds it once), or inherited through ``--fd``. Every
case runs a real ``ferrosock run`` and talks WebSocket and HTTP over the socket file.

A Unix socket's peer has no address: the app sees ``client`` None unless a trusted proxy
names the client, and only ``--forwarded-allow-ips '*'`` trusts such a peer, as uvicorn."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from core_server import REPO_DIR, TESTS_DIR, ServerProcess, startup_error
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidStatus
from worker_support import Proc, started_workers

TIMEOUT = 10.0
APP = "apps.proxied:app"


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "app.sock")


def serve(path: str, *extra: str, target: str = APP) -> ServerProcess:
    cwd = REPO_DIR if target.startswith("examples.") else TESTS_DIR
    return ServerProcess(target, "--uds", path, *extra, cwd=cwd)


async def websocket_sees(path: str, headers: dict[str, str] | None = None) -> dict:
    async with unix_connect(
        path, "ws://localhost/ws", additional_headers=headers, open_timeout=TIMEOUT
    ) as websocket:
        return json.loads(await asyncio.wait_for(websocket.recv(), TIMEOUT))


async def echo(path: str, text: str) -> str:
    async with unix_connect(path, "ws://localhost/ws", open_timeout=TIMEOUT) as websocket:
        await websocket.send(text)
        return await asyncio.wait_for(websocket.recv(), TIMEOUT)


def http_get(path: str, target: str, headers: str = "") -> tuple[int, bytes]:
    """One HTTP/1.1 request over the socket file: (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_websocket_and_http_are_served_over_the_socket_file(path):
    server = serve(path).start()
    try:
        assert server.port is None
        line = server.wait_for_stderr(lambda line: "running on" in line, TIMEOUT)
        assert f"running on unix:{path} " in line
        # Any local user may connect, as uvicorn makes the file.
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        seen = await websocket_sees(path)
        assert seen["client"] is None and seen["scope_client"] is None
        assert seen["url"] == "ws://localhost/ws" and seen["scope_scheme"] == "ws"
        status, body = await asyncio.to_thread(http_get, path, "/http?q=1")
        assert status == 200
        assert json.loads(body)["client"] is None
        assert json.loads(body)["url"] == "http://localhost/http?q=1"
        access = server.wait_for_stderr(lambda line: '"WebSocket /ws"' in line, TIMEOUT)
        assert access.startswith("INFO:") and "unix socket - " in access
    finally:
        assert server.stop() == 0
    assert not os.path.exists(path), "the socket file outlived the server"


async def test_proxy_headers_from_the_socket_count_only_under_any(path):
    forwarded = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}
    default = serve(path).start()
    try:
        seen = await websocket_sees(path, forwarded)
        assert seen["client"] is None and seen["scope_scheme"] == "ws"
    finally:
        default.stop()
    anyone = serve(path, "--forwarded-allow-ips", "*").start()
    try:
        seen = await websocket_sees(path, forwarded)
        assert seen["client"] == ["1.2.3.4", 0] and seen["scope_client"] == ["1.2.3.4", 0]
        assert seen["scope_scheme"] == "wss" and seen["url"] == "wss://localhost/ws"
        status, body = await asyncio.to_thread(
            http_get, path, "/http", "X-Forwarded-For: 5.6.7.8\r\n"
        )
        assert status == 200 and json.loads(body)["client"] == ["5.6.7.8", 0]
    finally:
        anyone.stop()


async def test_max_connections_per_ip_counts_the_client_a_trusted_proxy_names(path):
    async def connect_as(client: str | None):
        headers = None if client is None else {"X-Forwarded-For": client}
        return await unix_connect(
            path, "ws://localhost/ws", additional_headers=headers, open_timeout=TIMEOUT
        )

    # Without an address nothing is counted: the proxy in front is not one client.
    server = serve(path, "--max-connections-per-ip", "1", target="examples.echo:app").start()
    try:
        held = [await connect_as(None) for _ in range(3)]
        for websocket in held:
            await websocket.close()
    finally:
        server.stop()
    server = serve(
        path,
        "--max-connections-per-ip",
        "1",
        "--forwarded-allow-ips",
        "*",
        target="examples.echo:app",
    ).start()
    try:
        first = await connect_as("1.2.3.4")
        with pytest.raises(InvalidStatus) as refused:
            await connect_as("1.2.3.4")
        assert refused.value.response.status_code == 429
        other = await connect_as("5.6.7.8")
        await first.send("still served")
        assert await asyncio.wait_for(first.recv(), TIMEOUT) == "still served"
        for websocket in (first, other):
            await websocket.close()
    finally:
        server.stop()


async def test_a_stale_socket_file_is_replaced_and_keeps_its_mode(path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, with nobody listening: a server that died
    os.chmod(path, 0o660)
    server = serve(path, target="examples.echo:app").start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert await echo(path, "over a fresh socket") == "over a fresh socket"
    finally:
        server.stop()


def test_a_socket_another_server_listens_on_is_left_alone(path):
    server = serve(path, target="examples.echo:app").start()
    try:
        line = startup_error(APP, "--uds", path)
        assert line == f"error: uds: {path} is in use: another server listens on it"
        assert asyncio.run(echo(path, "first server")) == "first server"
    finally:
        server.stop()


def test_bad_uds_settings_fail_at_startup_naming_them(tmp_path, path):
    regular = tmp_path / "file"
    regular.write_text("not a socket")
    missing = tmp_path / "no" / "such" / "dir.sock"
    long_path = str(tmp_path / ("x" * 120))
    assert startup_error(APP, "--uds", str(regular)) == (
        f"error: uds: {regular} exists and is not a socket"
    )
    assert startup_error(APP, "--uds", str(missing)) == (
        f"error: uds: the directory of {missing} does not exist"
    )
    assert startup_error(APP, "--uds", long_path).startswith(
        f"error: uds: {long_path} is longer than a socket path may be"
    )
    assert startup_error(APP, "--uds", path, "--fd", "0") == (
        "error: fd and uds each name the socket to listen on: give one, not both"
    )
    assert regular.read_text() == "not a socket"


async def test_workers_share_one_socket_file(path):
    server = serve(path, "--workers", "2", target="examples.echo:app").start()
    workers: list[Proc] = []
    try:
        log = lambda: "\n".join(server.stderr_lines)  # noqa: E731
        await server.stderr_line(lambda _: log().count(f"running on unix:{path} (fd") >= 2, TIMEOUT)
        workers += [Proc.of(pid) for _, pid in started_workers(log())]
        assert len(workers) == 2 and all(w.parent() == server.pid for w in workers)
        replies = await asyncio.gather(*(echo(path, f"client {n}") for n in range(20)))
        assert replies == [f"client {n}" for n in range(20)]
    finally:
        assert server.stop() == 0
        for worker in workers:
            worker.kill()
    assert not os.path.exists(path), "the supervisor left its socket file behind"


async def test_an_inherited_unix_socket_is_served_through_fd(path):
    """systemd's ``ListenStream=/run/app.sock`` hands the process a bound Unix socket."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.set_inheritable(True)
    fd = listener.fileno()
    server = ServerProcess("examples.echo:app", "--fd", str(fd), cwd=REPO_DIR, pass_fds=(fd,))
    try:
        server.start()
        line = server.wait_for_stderr(lambda line: "running on" in line, TIMEOUT)
        assert f"running on unix:{path} (fd {fd})" in line
        assert await echo(path, "inherited") == "inherited"
    finally:
        server.stop()
        listener.close()
    # The file belongs to whoever bound it, not to the server.
    assert os.path.exists(path)
