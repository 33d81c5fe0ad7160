"""``--fd N``: serve on a listening socket the process inherited, as systemd's socket
activation hands one over, alone or shared by ``--workers``. The test binds the socket,
passes it to a real ``ferrosock run`` and talks WebSocket over it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from core_server import REPO_DIR, TESTS_DIR, ServerProcess
from core_support import VERSIONED_APP, app_version
from websockets.asyncio.client import connect
from worker_support import Proc, started_workers

TIMEOUT = 10.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bound, listening TCP socket on a free loopback port, inheritable by children."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    yield sock
    sock.close()


def serve_on(sock: socket.socket, *extra: str) -> ServerProcess:
    fd = sock.fileno()
    return ServerProcess("examples.echo:app", "--fd", str(fd), *extra, cwd=REPO_DIR, pass_fds=(fd,))


async def echo(port: int, text: str) -> str:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as websocket:
        await websocket.send(text)
        return await asyncio.wait_for(websocket.recv(), TIMEOUT)


def holds_socket(pid: int, fd: int, sock: socket.socket) -> bool:
    """Whether process ``pid`` has, at ``fd``, the very socket the test bound."""
    return os.stat(f"/proc/{pid}/fd/{fd}").st_ino == os.fstat(sock.fileno()).st_ino


async def test_a_websocket_echoes_over_the_inherited_socket(listener):
    port = listener.getsockname()[1]
    server = serve_on(listener).start()
    try:
        # The command line also says --port 0: had the server bound a port of its own, the
        # start-up line would name another one.
        assert server.port == port, server.output()
        line = server.wait_for_stderr(lambda line: "running on" in line, TIMEOUT)
        assert f"(fd {listener.fileno()})" in line
        assert await echo(port, "through the inherited socket") == "through the inherited socket"
    finally:
        server.stop()


async def test_workers_all_serve_the_inherited_socket(listener):
    port = listener.getsockname()[1]
    fd = listener.fileno()
    server = serve_on(listener, "--workers", "2").start()
    workers: list[Proc] = []
    try:
        log = lambda: "\n".join(server.stderr_lines)  # noqa: E731
        await server.stderr_line(lambda _: log().count(f":{port} (fd {fd})") >= 2, TIMEOUT)
        workers += [Proc.of(pid) for _, pid in started_workers(log())]
        assert len(workers) == 2
        for worker in workers:
            assert worker.parent() == server.pid
            assert holds_socket(worker.pid, fd, listener)
        replies = await asyncio.gather(*(echo(port, f"client {n}") for n in range(20)))
        assert replies == [f"client {n}" for n in range(20)]
    finally:
        server.stop()
        for worker in workers:
            worker.kill()


def _run_with_fd(fd: int, passed: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", "apps.deploy:app", "--fd", str(fd)],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        pass_fds=(fd,) if passed else (),
    )


def test_a_descriptor_that_is_not_a_listening_socket_fails_at_startup_naming_fd():
    result = _run_with_fd(99, passed=False)  # the child has nothing open past stderr
    assert result.returncode != 0
    assert result.stderr.strip() == "error: fd: 99 is not open (Bad file descriptor)"
    with socket.socket() as bound_only:
        bound_only.bind(("127.0.0.1", 0))
        bound_only.set_inheritable(True)
        result = _run_with_fd(bound_only.fileno())
    assert result.returncode != 0 and "is not listening" in result.stderr
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    try:
        result = _run_with_fd(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.returncode != 0 and f"fd: {read_end} is not a socket" in result.stderr


async def test_reload_hands_the_inherited_socket_to_each_new_server(listener, tmp_path):
    module = tmp_path / "versioned.py"
    module.write_text(VERSIONED_APP.format(version="one"))
    port, fd = listener.getsockname()[1], listener.fileno()
    server = ServerProcess(
        "versioned:app",
        *("--fd", str(fd), "--reload", "--reload-dir", str(tmp_path), "--app-dir", str(tmp_path)),
        cwd=tmp_path,
        pass_fds=(fd,),
    ).start()
    try:
        assert await app_version(port) == "one"
        # The watcher may start after the first server: write until it sees a change.
        restarted = lambda line: "restarting" in line  # noqa: E731
        for _ in range(20):
            module.write_text(VERSIONED_APP.format(version="two"))
            try:
                await server.stderr_line(restarted, 1.0)
                break
            except AssertionError:
                continue
        await server.stderr_line(lambda _: server.output().count(f"(fd {fd})") >= 2, TIMEOUT)
        assert await app_version(port) == "two"
    finally:
        server.stop()
