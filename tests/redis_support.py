"""A real ``redis-server`` on a free loopback port, for the scale-out tests.

Without ``redis-server`` on the PATH these tests skip, unless ``FERROSOCK_REQUIRE_SERVICES``
is set (CI sets it, after installing Redis): then a missing server is a failure.
The server runs in the foreground as a child of the test, with persistence off, so a test
can kill it, restart it on the same port, or pause it with SIGSTOP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

REDIS_SERVER = shutil.which("redis-server")
SERVICES_REQUIRED = bool(os.environ.get("FERROSOCK_REQUIRE_SERVICES"))


def require_redis() -> str:
    """The redis-server path; skips (or, when services are required, fails) without it."""
    if REDIS_SERVER is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if SERVICES_REQUIRED:
            pytest.fail(message + "; FERROSOCK_REQUIRE_SERVICES is set")
        pytest.skip(message)
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, *extra_args: str) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            require_redis(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not answer PING")

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """One command in RESP; the raw reply."""
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(request)
            return conn.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis vanishes without closing anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
