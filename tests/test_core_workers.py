"""``--workers N``: N forked processes share one port through SO_REUSEPORT under a supervisor
that replaces a worker that dies (backing off when they keep dying), stops them all on
SIGINT or SIGTERM and exits 0, and whose own death, even by SIGKILL, takes them with it.

Worker pids come from the supervisor's ``Started worker N (pid P)`` lines and are checked
against /proc; every process a test learns of is SIGKILLed at its end should it still run.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from core_server import REPO_DIR, TESTS_DIR, ServerProcess
from worker_support import EchoProbe, Proc, children, echo_once, started_workers, wait_until_gone

WORKERS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test has seen; SIGKILLed at the end if still running (by pid and start
    time, never another process that reused the pid)."""
    seen: list[Proc] = []
    yield seen
    for proc in seen:
        proc.kill()


def supervisor(port: int, *extra: str, app: str = "examples.echo:app") -> ServerProcess:
    cwd = REPO_DIR if app.startswith("examples.") else TESTS_DIR
    return ServerProcess(app, "--port", str(port), "--workers", str(WORKERS), *extra, cwd=cwd)


def log(server: ServerProcess) -> str:
    """All the supervisor's and its workers' stderr (``output()`` keeps the last lines)."""
    return "\n".join(server.stderr_lines)


async def wait_for_listeners(server: ServerProcess, count: int, timeout: float = 15.0) -> None:
    """Until ``count`` workers in all have announced that they listen."""
    await server.stderr_line(lambda _: log(server).count("running on") >= count, timeout)


def live_workers(server: ServerProcess, procs: list[Proc]) -> list[Proc]:
    """The workers the log says were started last in each place, checked to be children of
    the supervisor; each is added to ``procs``."""
    latest = dict(started_workers(log(server)))
    assert len(latest) == WORKERS, server.output()
    workers = [Proc.of(pid) for pid in latest.values()]
    procs.extend(workers)
    for worker in workers:
        assert worker.parent() == server.pid, (worker, server.output())
    return workers


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_workers_share_the_port_and_stop_together(signum, procs):
    port = free_port()
    server = supervisor(port).start()
    try:
        await wait_for_listeners(server, WORKERS)
        workers = live_workers(server, procs)
        assert children(server.pid) == {worker.pid for worker in workers}
        for index in range(8):
            await echo_once(port, f"hello {index}")
        server.send_signal(signum)
        assert await asyncio.to_thread(server.wait, 10.0) == 0, server.output()
        output = server.output()
        assert f"Received {signum.name}; stopping the workers" in output, output
        assert output.count("Finished server process") == WORKERS, output
        assert "Stopped all workers" in output, output
        assert "Traceback" not in output, output
        assert not [worker for worker in workers if worker.running()], output
    finally:
        server.stop()


async def test_a_killed_worker_is_logged_and_replaced_while_clients_echo(procs):
    port = free_port()
    server = supervisor(port).start()
    probe = EchoProbe(port)
    probing = asyncio.create_task(probe.run())
    try:
        await wait_for_listeners(server, WORKERS)
        victim, survivor = live_workers(server, procs)
        await probe.attempted(5, since=0.0, timeout=10.0)  # echoes before the kill

        killed_at = time.monotonic()
        assert victim.running()
        os.kill(victim.pid, signal.SIGKILL)
        death = await server.stderr_line(lambda line: f"(pid {victim.pid}) was" in line, 5.0)
        death_seen = time.monotonic()
        assert re.search(rf"Worker \d \(pid {victim.pid}\) was killed by SIGKILL", death), death
        await echo_once(port, "while a worker is missing")
        # The replacement takes the victim's place and listens too.
        await wait_for_listeners(server, WORKERS + 1)
        replaced_at = time.monotonic()
        replacement, still_there = live_workers(server, procs)
        assert replacement.pid != victim.pid and still_there == survivor, server.output()
        assert not victim.running()
        await probe.attempted(5, since=replaced_at, timeout=10.0)  # echoes after it
        probe.stop()
        await asyncio.wait_for(probing, 15)

        failed = [a for a in probe.attempts if a.error is not None]
        # Only a connection to the dying worker (open, or in its accept queue) may fail;
        # every one begun once its death was logged succeeds, on the survivor or after.
        assert all(a.started < death_seen for a in failed), failed
        assert not [a for a in probe.between(0, killed_at) if a.error], probe.attempts

        # A worker that died and was replaced does not make the shutdown unclean.
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 10.0) == 0, server.output()
        assert not [p for p in (replacement, survivor) if p.running()], server.output()
    finally:
        probe.stop()
        probing.cancel()
        server.stop()


async def test_workers_exit_when_the_supervisor_is_killed(procs):
    port = free_port()
    server = supervisor(port).start()
    try:
        await wait_for_listeners(server, WORKERS)
        workers = live_workers(server, procs)
        await echo_once(port, "before")
        server.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(server.wait, 5.0) == -signal.SIGKILL
        left = await asyncio.to_thread(wait_until_gone, workers, 5.0)
        assert not left, f"workers {left} outlived their supervisor\n{server.output()}"
        # They were told with SIGTERM, so they shut down gracefully.
        await server.stderr_line(
            lambda _: server.output().count("Finished server process") >= WORKERS, 5.0
        )
    finally:
        server.stop()


async def test_workers_that_keep_failing_are_restarted_with_growing_delays(procs):
    port = free_port()
    blocker = socket.socket()  # holds the port without SO_REUSEPORT: the workers cannot bind
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    server = supervisor(port)
    starting = asyncio.create_task(asyncio.to_thread(server.start, 40.0))
    try:
        pattern = re.compile(r"Worker 1 \(pid \d+\) exited with code 1 .* in ([\d.]+) s")
        seen_at: list[float] = []
        for deaths in range(1, 6):
            await server.stderr_line(
                lambda _, n=deaths: len(pattern.findall(log(server))) >= n, 15.0
            )
            seen_at.append(time.monotonic())
        delays = [float(delay) for delay in pattern.findall(log(server))[:5]]
        assert delays == [0.1, 0.2, 0.4, 0.8, 1.6], server.output()
        # The delays are really waited: no hot loop.
        assert seen_at[-1] - seen_at[0] >= sum(delays[:-1]) - 0.1, (seen_at, server.output())
        assert "OSError: Address already in use" in log(server), server.output()
        # Each place has been filled five or six times by now, not more.
        assert len(started_workers(log(server))) <= WORKERS * 6, server.output()

        blocker.close()  # the next attempts bind
        await asyncio.wait_for(starting, 30)
        await wait_for_listeners(server, WORKERS)
        live_workers(server, procs)
        await echo_once(port, "bound at last")
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 10.0) == 0, server.output()
    finally:
        blocker.close()
        await asyncio.wait({starting}, timeout=45)
        if starting.done() and not starting.cancelled():
            starting.exception()  # retrieved: a failure here is reported by the asserts above
        server.stop()


async def test_workers_stuck_in_shutdown_are_killed_after_the_grace_period(procs):
    port = free_port()
    grace = 0.5
    server = supervisor(
        port, "--graceful-shutdown-timeout", str(grace), app="worker_support:app"
    ).start()
    try:
        await wait_for_listeners(server, WORKERS)
        workers = live_workers(server, procs)
        await echo_once(port, "hello")
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # The grace period, plus the supervisor's margin of 5 s, then SIGKILL: exit 1.
        assert await asyncio.to_thread(server.wait, grace + 15.0) == 1, server.output()
        took = time.monotonic() - stopping
        assert grace + 4.5 <= took <= grace + 10.0, (took, server.output())
        output = server.output()
        for worker in workers:
            assert f"(pid {worker.pid}) still running" in output, output
            assert f"(pid {worker.pid}) was killed by SIGKILL while stopping" in output, output
        assert not [worker for worker in workers if worker.running()], output
    finally:
        server.stop()
