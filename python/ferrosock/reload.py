"""``ferrosock run ... --reload``: run the server as a child process and start a new one
whenever a Python file under the watched directories changes, as uvicorn's reloader does.

The watching is done by ``watchfiles`` (the ``ferrosock[standard]`` extra), which notices
changes through inotify and batches a burst of saves into one restart. The child is the
same command line without ``--reload``, so it imports the app afresh."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .logs import configure_logging

logger = logging.getLogger("ferrosock.error")

# A child that has not exited this long after SIGTERM is killed.
STOP_TIMEOUT = 15.0


def child_command(argv: Sequence[str]) -> list[str]:
    """The command line of the server process: ``argv`` without the reload flags."""
    command: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in ("--reload", "--no-reload"):
            continue
        elif arg == "--reload-dir":
            skip_value = True
        elif not arg.startswith("--reload-dir="):
            command.append(arg)
    return [sys.executable, "-m", "ferrosock", *command]


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run_with_reload(
    argv: Sequence[str], directories: list[str] | None, fd: int | None = None
) -> int:
    """Serve until SIGINT/SIGTERM, restarting on changes; the exit status (0 when stopped).
    An inherited listening socket (``fd``) is passed on to each server process."""
    configure_logging("info")
    try:
        from watchfiles import PythonFilter, watch  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        logger.error("--reload needs watchfiles: pip install 'ferrosock[standard]'")
        return 2
    watched = [os.path.abspath(d) for d in (directories or ["."])]
    missing = [d for d in watched if not os.path.isdir(d)]
    if missing:
        logger.error("reload_dirs: no such directory: %s", ", ".join(missing))
        return 2
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    command = child_command(argv)
    pass_fds = () if fd is None else (fd,)
    logger.info("Will watch for changes in these directories: %s", watched)
    child = subprocess.Popen(command, pass_fds=pass_fds)
    logger.info("Started reloader process [%d], server process [%d]", os.getpid(), child.pid)
    try:
        for changes in watch(*watched, watch_filter=PythonFilter(), stop_event=stop):
            names = sorted({os.path.relpath(path) for _, path in changes})
            logger.warning("Changes in %s; restarting the server", ", ".join(names))
            _stop(child)
            child = subprocess.Popen(command, pass_fds=pass_fds)
            logger.info("Started server process [%d]", child.pid)
    finally:
        _stop(child)
    logger.info("Stopped reloader process [%d]", os.getpid())
    return 0
