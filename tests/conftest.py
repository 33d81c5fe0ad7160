"""Fixtures shared by the core tests: real ferrosock servers in subprocesses (see
core_server.py), and a runner for ``async def`` tests, each on a fresh event loop and
bounded by ``ASYNC_TEST_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # lets test modules import core_server, core_support

from core_server import ServerProcess  # noqa: E402 - needs the sys.path entry above

ASYNC_TEST_TIMEOUT = 60.0


def _server_factory() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(target: str, *extra_args: str, cwd: Path = TESTS_DIR) -> ServerProcess:
        server = ServerProcess(target, *extra_args, cwd=cwd)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server("apps.core:app", "--ws-max-size", "65536")``; each server is
    stopped when the test ends."""
    yield from _server_factory()


@pytest.fixture(scope="module")
def start_server_module() -> Iterator[Callable[..., ServerProcess]]:
    """As ``start_server``, for servers shared by one test module."""
    yield from _server_factory()


@pytest.fixture(scope="module")
def core_server(start_server_module) -> ServerProcess:
    """``tests/apps/core.py`` with default settings, shared by one test module."""
    return start_server_module("apps.core:app")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on a fresh loop, each bounded by ``ASYNC_TEST_TIMEOUT``."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**arguments), ASYNC_TEST_TIMEOUT)

    asyncio.run(bounded())
    return True
