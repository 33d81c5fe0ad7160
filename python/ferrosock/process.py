"""Running a server as the program: ``run()``, its settings check, logging, the event loop,
the open-files limit and the worker processes."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from . import _engine
from .config import Config, check_positive
from .listeners import UnixListener, check_unix_path, inherited_address
from .logs import configure_logging, log_level_number, read_log_config
from .manager import BackendSettings, partitioned_managers
from .proxies import Forwarding
from .server import Server

logger = logging.getLogger("ferrosock.error")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for or (``auto``) when installed; asyncio's loop otherwise."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


# After the server stopped: how long tasks still running (the app's own, or handlers that
# ignored being cancelled) get to finish once cancelled, before the loop is closed
# without them.
LEFT_BEHIND_WAIT = 0.1


def serve(app: Any, config: Config) -> None:
    """Run the server on a new loop. Unlike ``asyncio.run``, the loop is closed even if
    some task never finishes: a handler that swallows its cancellation must not keep the
    process from exiting."""
    factory = loop_factory(config.loop)
    loop = factory() if factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Server(app, config).serve())
    finally:
        try:
            _finish_tasks(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _finish_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=LEFT_BEHIND_WAIT))
    left = [task for task in tasks if not task.done()]
    if left:
        logger.warning("Exiting with %d task(s) that ignored being cancelled", len(left))
    loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), LEFT_BEHIND_WAIT))


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit, as Go's runtime does: with
    the common soft default of 1024, a thousand idle connections lock every new client
    out. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as error:
            logger.warning("Could not raise the open-files limit above %d: %s", soft, error)
    return soft


def main_process(app: Any, config: Config) -> None:
    configure_logging(config.log_level, config.log_config)
    logger.info(
        "Open files limit: %d (about that many connections per process)", raise_open_files_limit()
    )
    if config.workers <= 1:
        serve(app, config)
        return
    partitioned = partitioned_managers(config)
    if partitioned:
        logger.warning(
            "%d worker processes with %d native ConnectionManager(s) and no "
            "--broadcast-backend: each worker's manager reaches only the sockets of that "
            "worker (broadcasts, send_to, members and counts are partitioned)",
            config.workers,
            partitioned,
        )
    if not Supervisor(app, config).run():
        sys.exit(1)


# A worker that lived this long before dying is restarted at once: its death is not part
# of a crash loop. One that died sooner waits RESTART_DELAY_FIRST, doubled after each
# further quick death up to RESTART_DELAY_MAX.
STABLE_LIFETIME = 10.0
RESTART_DELAY_FIRST = 0.1
RESTART_DELAY_MAX = 10.0
# Workers get graceful_shutdown_timeout for their handlers, then 0.4 s to cancel
# them, then the app's shutdown events; this margin covers the last two before SIGKILL.
SHUTDOWN_MARGIN = 5.0
# Signals the supervisor acts on; they are blocked around fork so that a worker never runs
# the supervisor's handlers (see Supervisor._start).
SUPERVISOR_SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def describe_status(status: int | None) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL``, from a ``waitpid`` status."""
    if status is None:
        return "ended, its status taken by another waitpid"
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


@dataclass
class _Slot:
    """One of the ``workers`` places: the process now in it and its crash-loop state."""

    number: int
    pid: int | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Forks ``config.workers`` processes that share the port through SO_REUSEPORT and
    keeps that many running.

    A worker that dies is logged with its status and replaced, after a growing delay when
    workers keep dying young. SIGINT or SIGTERM to the supervisor is passed on as SIGTERM
    (a graceful shutdown; a worker also gets Ctrl-C's SIGINT from the terminal, and two
    SIGINTs would stop it at once); the workers get ``graceful_shutdown_timeout`` plus
    SHUTDOWN_MARGIN to exit before SIGKILL. Workers stop by themselves when the supervisor
    dies, even by SIGKILL (see ``_follow_supervisor``).

    The main loop sleeps in ``select`` on the read end of a pipe given to
    ``signal.set_wakeup_fd``: every SIGCHLD, SIGINT and SIGTERM writes its number there, so
    the loop wakes for each death and each request to stop, and at the next timer (a
    delayed restart, the shutdown deadline) otherwise.

    Workers are made with a plain ``os.fork`` (the app object is inherited, as with
    multiprocessing's fork context): the supervisor needs the raw ``waitpid`` status of
    each, a signal mask held across the fork, and the worker's first steps taken before any
    other code runs in it, none of which ``multiprocessing.Process`` gives directly.
    """

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.config = config
        self.worker_config = config.replace(workers=1, reuse_port=True)
        self.pid = os.getpid()
        self.slots = [_Slot(number) for number in range(1, config.workers + 1)]
        self.stopping_since: float | None = None
        self.clean = True
        self._wakeup_read = -1
        self._wakeup_write = -1

    def run(self) -> bool:
        """Supervise until SIGINT or SIGTERM; whether every worker then stopped cleanly."""
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        previous_handlers = {signum: signal.getsignal(signum) for signum in SUPERVISOR_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
        # A Unix socket is bound once, here; the workers inherit it as their fd.
        unix = None
        if self.config.uds is not None:
            unix = UnixListener(self.config.uds, self.config.backlog)
            self.worker_config = self.worker_config.replace(uds=None, fd=unix.fileno())
        try:
            for signum in SUPERVISOR_SIGNALS:
                signal.signal(signum, _record_only)
            logger.info("Started supervisor (pid %d) for %d workers", self.pid, len(self.slots))
            for slot in self.slots:
                self._start(slot)
            while self.stopping_since is None or self._live():
                self._wait_for_event()
                self._reap()
                self._restart_due()
                self._enforce_deadline()
        finally:
            if unix is not None:
                unix.close()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
        if self.clean:
            logger.info("Stopped all workers")
        return self.clean

    def _live(self) -> list[_Slot]:
        return [slot for slot in self.slots if slot.pid is not None]

    # ---- waiting ----

    def _wait_for_event(self) -> None:
        timers = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self.stopping_since is not None:
            timers.append(self._deadline())
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        readable, _, _ = select.select([self._wakeup_read], [], [], timeout)
        if not readable:
            return
        try:
            received = os.read(self._wakeup_read, 512)
        except BlockingIOError:
            return
        for signum in received:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self._stop(signal.Signals(signum).name)

    def _stop(self, reason: str) -> None:
        if self.stopping_since is not None:
            logger.info("Received %s again; still waiting for the workers to stop", reason)
            return
        self.stopping_since = time.monotonic()
        live = self._live()
        if live:
            pids = ", ".join(str(slot.pid) for slot in live)
            logger.info("Received %s; stopping the workers (pids %s)", reason, pids)
        else:
            logger.info("Received %s; no worker is running, and none will be started", reason)
        for slot in self.slots:
            slot.restart_at = None
        for slot in live:
            self._signal(slot, signal.SIGTERM)

    def _deadline(self) -> float:
        assert self.stopping_since is not None
        return self.stopping_since + self.config.graceful_shutdown_timeout + SHUTDOWN_MARGIN

    def _enforce_deadline(self) -> None:
        if self.stopping_since is None or time.monotonic() < self._deadline():
            return
        for slot in self._live():
            logger.warning(
                "Worker %d (pid %d) still running %.1f s after SIGTERM; killing it",
                slot.number,
                slot.pid,
                time.monotonic() - self.stopping_since,
            )
            self._signal(slot, signal.SIGKILL)
            assert slot.pid is not None
            _, status = os.waitpid(slot.pid, 0)
            self._died(slot, status)

    @staticmethod
    def _signal(slot: _Slot, signum: int) -> None:
        # The pid is still ours: it is only ever reaped by _reap or _enforce_deadline, which
        # clear slot.pid, so it cannot have been reused by another process.
        assert slot.pid is not None
        try:
            os.kill(slot.pid, signum)
        except ProcessLookupError:
            pass

    # ---- deaths and restarts ----

    def _reap(self) -> None:
        for slot in self._live():
            assert slot.pid is not None
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: the status is lost
                pid, status = slot.pid, None
            if pid:
                self._died(slot, status)

    def _died(self, slot: _Slot, status: int | None) -> None:
        pid, lived = slot.pid, time.monotonic() - slot.started_at
        slot.pid = None
        outcome = describe_status(status)
        if self.stopping_since is not None:
            if status is not None and _stopped_as_asked(status):
                logger.debug("Worker %d (pid %d) stopped", slot.number, pid)
            else:
                self.clean = False
                logger.error("Worker %d (pid %d) %s while stopping", slot.number, pid, outcome)
            return
        if lived >= STABLE_LIFETIME:
            slot.quick_deaths = 0
            logger.error(
                "Worker %d (pid %d) %s after %.1f s; starting a new one",
                slot.number,
                pid,
                outcome,
                lived,
            )
            self._start(slot)
        else:
            delay = self._delay_restart(slot)
            logger.error(
                "Worker %d (pid %d) %s after %.1f s; starting a new one in %.1f s "
                "(quick deaths in a row: %d)",
                slot.number,
                pid,
                outcome,
                lived,
                delay,
                slot.quick_deaths,
            )

    @staticmethod
    def _delay_restart(slot: _Slot) -> float:
        slot.quick_deaths += 1
        delay = min(RESTART_DELAY_FIRST * 2.0 ** (slot.quick_deaths - 1), RESTART_DELAY_MAX)
        slot.restart_at = time.monotonic() + delay
        return delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self._start(slot)

    # ---- forking ----

    def _start(self, slot: _Slot) -> None:
        # Blocked until each side has its own handlers: a signal meant for the supervisor
        # that arrives in the child meanwhile is left pending and then gets the worker's.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(slot, blocked)
        except OSError as error:
            delay = self._delay_restart(slot)
            logger.error(
                "Could not start worker %d (%s); trying again in %.1f s", slot.number, error, delay
            )
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pid, slot.started_at = pid, time.monotonic()
        logger.info("Started worker %d (pid %d)", slot.number, pid)

    def _become_worker(self, slot: _Slot, mask: Iterable[int]) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _follow_supervisor(self.pid)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            serve(self.app, self.worker_config)
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:  # sys.exit("message"), which Python would print
                logger.error("Worker %d (pid %d): %s", slot.number, os.getpid(), exit_.code)
        except KeyboardInterrupt:
            # Ctrl-C pressed twice: die by SIGINT, as an interrupted program should.
            _flush_output()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            logger.exception("Worker %d (pid %d) failed", slot.number, os.getpid())
        finally:
            _flush_output()
            os._exit(code)


def _stopped_as_asked(status: int) -> bool:
    """Exit code 0, or death by the SIGTERM passed on (or Ctrl-C's SIGINT) before the
    worker's own handlers were in place."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGINT)
    return os.waitstatus_to_exitcode(status) == 0


def _record_only(signum: int, frame: Any) -> None:
    """The supervisor's handler: the wakeup fd has recorded the signal; the loop acts."""


def _follow_supervisor(supervisor_pid: int) -> None:
    """Make this worker receive SIGTERM (a graceful shutdown) when the supervisor dies.

    PR_SET_PDEATHSIG is the kernel's own notice of the parent's death: it arrives however
    the supervisor died, SIGKILL included, and needs neither a thread nor a descriptor in
    the worker nor any help from the server's event loop, which a pipe's EOF would. It is
    Linux-only, as the engine is (eventfd). It fires when the thread that forked the worker
    ends, which here is the supervisor's main thread, so at the supervisor's exit. Should
    the supervisor have died between fork and prctl, the worker's parent is no longer it,
    and the worker leaves at once.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed (%s): this worker will outlive its supervisor",
            os.strerror(error),
        )
    if os.getppid() != supervisor_pid:
        logger.error(
            "Supervisor (pid %d) exited before worker %d started", supervisor_pid, os.getpid()
        )
        raise SystemExit(1)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def check_settings(config: Config) -> None:
    """Fail before anything starts when a setting has a bad value (ValueError naming it)."""
    if config.metrics_path is not None and not config.metrics_path.startswith("/"):
        raise ValueError(f"metrics_path must start with '/', not {config.metrics_path!r}")
    BackendSettings.from_config(config)
    log_level_number(config.log_level)
    Forwarding.from_config(config)
    if config.log_config is not None:
        read_log_config(config.log_config)
    if config.fd is not None and config.uds is not None:
        raise ValueError("fd and uds each name the socket to listen on: give one, not both")
    if config.fd is not None:
        inherited_address(config.fd)
    if config.uds is not None:
        check_unix_path(config.uds)
    if not config.slow_consumer_timeout > 0:
        raise ValueError(
            "slow_consumer_timeout must be a positive number of seconds, "
            f"not {config.slow_consumer_timeout!r}"
        )
    for rate in ("ws_max_messages_per_second", "ws_max_bytes_per_second", "ws_idle_timeout"):
        check_positive(rate, getattr(config, rate))
    if config.loop not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"loop must be auto, asyncio or uvloop, not {config.loop!r}")
    if config.ssl_cert_reqs not in (0, 1, 2):
        raise ValueError(f"ssl_cert_reqs must be 0, 1 or 2, not {config.ssl_cert_reqs!r}")
    _engine.check_tls(config)
    check_limits(config)


# The connection limits: (setting, smallest, largest, whole numbers only, None allowed).
_LIMITS: tuple[tuple[str, float, float | None, bool, bool], ...] = (
    ("handshake_timeout", 0.01, None, False, False),
    ("timeout_keep_alive", 0.01, None, False, False),
    ("http_max_header_size", 1024, 256 * 1024, True, False),
    ("http_max_headers", 1, 1000, True, False),
    ("max_connections_per_ip", 1, None, True, True),
)


def check_limits(config: Config) -> None:
    """The connection limits are numbers in their range (ValueError naming the setting)."""
    for name, low, high, whole, optional in _LIMITS:
        value = getattr(config, name)
        if value is None and optional:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (whole and not isinstance(value, int))
            or value < low
            or (high is not None and value > high)
        ):
            what = "a whole number" if whole else "a number of seconds"
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            also = " or None" if optional else ""
            raise ValueError(f"{name} must be {what} {bounds}{also}, not {value!r}")


def run(app: Any, **settings: Any) -> None:
    """Serve ``app`` until interrupted: ``ferrosock.run(app, host="0.0.0.0", port=8000)``.
    Settings given here win over those given to ``App(...)``. With ``factory=True``,
    ``app`` is called (with no arguments) for the app to serve."""
    config = Config.from_settings(getattr(app, "settings", {}), settings)
    if config.reload:
        raise ValueError(
            "reload needs the app as an import string: ferrosock run module:app --reload"
        )
    if config.factory:
        if not callable(app):
            raise ValueError(f"factory: {app!r} is not callable")
        app = app()
        config = Config.from_settings(getattr(app, "settings", {}), settings)
    check_settings(config)
    main_process(app, config)
