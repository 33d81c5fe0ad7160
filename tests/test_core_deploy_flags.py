"""uvicorn's deployment flags on a real ``ferrosock run``: access log on and off, a logging
configuration file, an app factory, an environment file."""

from __future__ import annotations

import json
import subprocess
import sys

from core_server import TESTS_DIR
from websockets.asyncio.client import connect

TIMEOUT = 10


async def _greeting(server, path: str = "/greeting") -> str:
    async with connect(server.ws_url(path), open_timeout=TIMEOUT) as websocket:
        return await websocket.recv()


async def test_access_log_is_on_by_default_and_off_with_no_access_log(start_server):
    logged = start_server("apps.deploy:app")
    await _greeting(logged)
    logged.wait_for_stderr(lambda line: '"WebSocket /greeting" closed' in line, TIMEOUT)
    quiet = start_server("apps.deploy:app", "--no-access-log")
    await _greeting(quiet)
    await _greeting(quiet)
    quiet.stop()
    # As uvicorn, the "[accepted]" line belongs to the error log and stays.
    assert '"WebSocket /greeting" closed' not in "\n".join(quiet.stderr_lines)


async def test_log_config_file_is_applied(start_server, tmp_path):
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tagged": {"format": "TAGGED %(name)s %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tagged",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"ferrosock": {"handlers": ["stderr"], "level": "INFO"}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    server = start_server("apps.deploy:app", "--log-config", str(path))
    line = server.wait_for_stderr(lambda line: "running on" in line, TIMEOUT)
    assert line.startswith("TAGGED ferrosock.error ferrosock running on")


async def test_factory_is_called_for_the_app(start_server):
    server = start_server("apps.deploy:create_app", "--factory")
    assert await _greeting(server, "/made") == "made by the factory"


async def test_env_file_is_loaded_before_the_app_is_imported(start_server, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text('# settings\nexport GREETING="hello from the file"\nUNUSED=1 # note\n')
    server = start_server("apps.deploy:app", "--env-file", str(env_file))
    assert await _greeting(server) == "hello from the file"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", *args],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_env_file_settings_and_bad_files_fail_at_startup_naming_the_setting(tmp_path):
    env_file = tmp_path / "bad.env"
    env_file.write_text("FERROSOCK_BROADCAST_BACKEND=http://nowhere\n")
    result = _run("apps.deploy:app", "--env-file", str(env_file))
    assert result.returncode != 0 and "broadcast_backend" in result.stderr
    result = _run("apps.deploy:app", "--env-file", str(tmp_path / "missing.env"))
    assert result.returncode != 0 and "env_file" in result.stderr
    result = _run("apps.deploy:app", "--log-config", str(tmp_path / "missing.json"))
    assert result.returncode != 0 and "log_config" in result.stderr
    result = _run("apps.deploy:app", "--log-level", "loud")
    assert result.returncode != 0 and "log_level" in result.stderr
    result = _run("apps.deploy:app", "--slow-consumer-timeout", "0")
    assert result.returncode != 0 and "slow_consumer_timeout" in result.stderr
    assert "Traceback" not in result.stderr


async def test_engine_debug_lines_appear_at_log_level_debug_only(start_server):
    ended = "ended with 1000"
    verbose = start_server("apps.deploy:app", "--log-level", "debug")
    await _greeting(verbose)
    verbose.wait_for_stderr(lambda line: ended in line, TIMEOUT)
    # At the default level the engine drops its debug lines before Python sees them; the
    # access line, logged after the connection's end, shows that end has been reached.
    default = start_server("apps.deploy:app")
    await _greeting(default)
    default.wait_for_stderr(lambda line: '"WebSocket /greeting" closed' in line, TIMEOUT)
    default.stop()
    assert ended not in "\n".join(default.stderr_lines)


async def test_the_open_files_limit_is_raised_to_the_hard_limit_and_logged(start_server):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        server = start_server("apps.deploy:app")  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    line = server.wait_for_stderr(lambda line: "Open files limit" in line, TIMEOUT)
    assert f"limit: {hard}" in line or hard == resource.RLIM_INFINITY
    with open(f"/proc/{server.pid}/limits") as limits:
        row = next(r for r in limits if r.startswith("Max open files"))
    assert int(row.split()[3]) == hard
