"""A real ferrosock server in a subprocess, as the core tests start it.

The server runs ``python -m ferrosock run MODULE:app --host 127.0.0.1 --port 0`` and the
bound port is read from the start-up line on stderr. Reader threads keep both output pipes
drained (a server that logs every connection must never block on a full pipe) and let tests
wait for a log line instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
# A server on a Unix socket (``--uds``, or an inherited one) has no port: ``port`` is None.
STARTUP_LINE = re.compile(r"running on (?:https?://127\.0\.0\.1:(\d+)|unix:)")


class ServerProcess:
    """One ``ferrosock run`` subprocess and everything it has written."""

    def __init__(
        self, target: str, *extra_args: str, cwd: Path = TESTS_DIR, pass_fds: tuple[int, ...] = ()
    ) -> None:
        self.target = target
        self.pass_fds = pass_fds
        self.command = [
            sys.executable,
            "-m",
            "ferrosock",
            "run",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *extra_args,
        ]
        self.cwd = cwd
        self.port: int | None = None
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._output_changed = threading.Condition()
        self._stderr_ended = False
        self._process: subprocess.Popen[str] | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            pass_fds=self.pass_fds,
        )
        for stream, lines in (
            (self._process.stderr, self.stderr_lines),
            (self._process.stdout, self.stdout_lines),
        ):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()
        try:
            line = self.wait_for_stderr(STARTUP_LINE.search, timeout)
        except AssertionError:
            self.kill()
            raise
        port = STARTUP_LINE.search(line).group(1)
        self.port = None if port is None else int(port)
        return self

    def _collect(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._output_changed:
                lines.append(line.rstrip("\n"))
                self._output_changed.notify_all()
        with self._output_changed:
            if lines is self.stderr_lines:
                self._stderr_ended = True
            self._output_changed.notify_all()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def send_signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test if the process is still running after ``timeout``."""
        assert self._process is not None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server {self.target} still running {timeout} s later\n{self.output()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if the process has not exited within ``timeout``."""
        if self._process is None or self._process.poll() is not None:
            return None if self._process is None else self._process.returncode
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.kill()
        return self._process.wait(STOP_TIMEOUT)

    # -- output -----------------------------------------------------------------------

    def wait_for_stderr(self, matches: Callable[[str], object], timeout: float) -> str:
        """The first stderr line for which ``matches`` is true, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._output_changed:
            while True:
                for line in self.stderr_lines[checked:]:
                    if matches(line):
                        return line
                checked = len(self.stderr_lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stderr_ended:
                    break
                self._output_changed.wait(remaining)
        state = "exited" if self.exited() else "still running"
        raise AssertionError(
            f"no matching stderr line within {timeout} s (server {state})\n{self.output()}"
        )

    async def stderr_line(self, matches: Callable[[str], object], timeout: float) -> str:
        """``wait_for_stderr`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.wait_for_stderr, matches, timeout)

    def output(self) -> str:
        with self._output_changed:
            return (
                f"$ {' '.join(self.command)}\n--- stderr ---\n"
                + "\n".join(self.stderr_lines[-200:])
                + "\n--- stdout ---\n"
                + "\n".join(self.stdout_lines[-50:])
            )

    # -- addresses --------------------------------------------------------------------

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def startup_error(target: str, *extra_args: str) -> str:
    """The one stderr line of a ``ferrosock run`` that refuses to start (fails the test if
    it starts, or says more or less than one line)."""
    result = subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", target, "--port", "0", *extra_args],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0, f"{target} {extra_args} started"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
