"""Helpers for the ``--workers`` tests: the processes a supervisor forks, read from /proc and
its log, an echo client that keeps probing a port, and an app whose shutdown hangs.

A process is named by its pid together with its start time (field 22 of /proc/PID/stat), so
a test never mistakes, or signals, another process that reused the pid.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

from ferrosock import App, WebSocket

STARTED_WORKER = re.compile(r"Started worker (\d+) \(pid (\d+)\)")


@dataclass(frozen=True)
class Proc:
    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        stat = _stat(pid)
        assert stat is not None, f"process {pid} does not exist"
        return cls(pid, int(stat[19]))

    def running(self) -> bool:
        """Still this process, and not a zombie."""
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start_time and stat[0] != "Z"

    def parent(self) -> int | None:
        stat = _stat(self.pid)
        return int(stat[1]) if stat is not None and int(stat[19]) == self.start_time else None

    def kill(self) -> None:
        """SIGKILL, if it is still this process."""
        if self.running():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: the command name in field 2 may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> set[int]:
    """The pids of a process's children, from /proc/PID/task/*/children."""
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in path.read_text().split())
        except FileNotFoundError:
            pass
    return found


def started_workers(output: str) -> list[tuple[int, int]]:
    """(worker number, pid) for every worker the supervisor's log says it started."""
    return [(int(number), int(pid)) for number, pid in STARTED_WORKER.findall(output)]


def wait_until_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """The processes still running ``timeout`` seconds from now (none, at best, and sooner)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [proc for proc in procs if proc.running()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


async def echo_once(port: int, text: str) -> None:
    async with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as websocket:
        await websocket.send(text)
        reply = await asyncio.wait_for(websocket.recv(), 5)
        assert reply == text, (reply, text)


@dataclass
class Attempt:
    started: float
    error: str | None


@dataclass
class EchoProbe:
    """Connects, echoes one message and closes, over and over, until stopped; each attempt is
    recorded with its start time and its error, if any."""

    port: int
    attempts: list[Attempt] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await echo_once(self.port, f"probe {len(self.attempts)}")
            except Exception as error:  # recorded, and judged by the test
                self.attempts.append(Attempt(started, repr(error)))
            else:
                self.attempts.append(Attempt(started, None))
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def between(self, start: float, end: float = float("inf")) -> list[Attempt]:
        return [attempt for attempt in self.attempts if start <= attempt.started < end]

    async def attempted(self, count: int, since: float, timeout: float) -> None:
        """Until ``count`` attempts have begun at ``since`` or later."""
        deadline = time.monotonic() + timeout
        while len(self.between(since)) < count:
            assert time.monotonic() < deadline, f"{count} attempts not made: {self.attempts}"
            await asyncio.sleep(0.02)


# ``worker_support:app``: echoes on /echo like examples.echo, and its shutdown never ends,
# so a worker asked to stop has to be killed.
app = App()


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


@app.on_event("shutdown")
async def hang() -> None:
    await asyncio.sleep(3600)
