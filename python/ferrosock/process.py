"""Running a server as the program: logging, the event loop, worker processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .config import Config
from .server import Server

logger = logging.getLogger("ferrosock.error")

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class _LevelPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname}:".ljust(10)
        return prefix + super().format(record)


def configure_logging(level: str) -> None:
    """uvicorn-like lines on stderr: ``INFO:     message``."""
    try:
        numeric = LOG_LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        ) from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefixFormatter())
    for name in ("ferrosock", "ferrosock.error", "ferrosock.access"):
        log = logging.getLogger(name)
        log.handlers = [handler] if name == "ferrosock" else []
        log.setLevel(numeric)
        log.propagate = name != "ferrosock"


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


def serve(app: Any, config: Config) -> None:
    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(Server(app, config).serve())


def main_process(app: Any, config: Config) -> None:
    configure_logging(config.log_level)
    if config.workers <= 1:
        serve(app, config)
        return
    supervise(app, config)


def supervise(app: Any, config: Config) -> None:
    """Fork ``workers`` processes sharing the port through SO_REUSEPORT; forward SIGINT
    and SIGTERM to them and exit when they all have."""
    context = multiprocessing.get_context("fork")
    worker_config = config.replace(workers=1, reuse_port=True)
    workers = [
        context.Process(target=serve, args=(app, worker_config), name=f"ferrosock-worker-{i}")
        for i in range(config.workers)
    ]
    for worker in workers:
        worker.start()
    logger.info("Started %d workers (pids %s)", len(workers), [w.pid for w in workers])

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.pid and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for worker in workers:
        worker.join()
    failed = [w.exitcode for w in workers if w.exitcode not in (0, None)]
    if failed:
        sys.exit(1)
