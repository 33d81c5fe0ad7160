"""``--reload``: a change to a watched Python file restarts the server with the new code;
SIGTERM stops the reloader and its server."""

from __future__ import annotations

import asyncio
import os
import signal

from core_server import ServerProcess
from core_support import VERSIONED_APP, app_version
from redis_support import free_port

from ferrosock.reload import child_command


def test_the_server_command_drops_only_the_reload_flags():
    argv = ["run", "m:app", "--reload", "--reload-dir", "src", "--port", "1", "--reload-dir=x"]
    assert child_command(argv)[-4:] == ["run", "m:app", "--port", "1"]


async def test_a_changed_file_restarts_the_server_with_the_new_code(tmp_path):
    (tmp_path / "reloadme.py").write_text(VERSIONED_APP.format(version="one"))
    port = free_port()
    server = ServerProcess(
        "reloadme:app",
        "--port",
        str(port),
        "--reload",
        "--reload-dir",
        str(tmp_path),
        "--app-dir",
        str(tmp_path),
        cwd=tmp_path,
    ).start()
    try:
        assert await app_version(port) == "one"
        await asyncio.sleep(0.3)  # let the watcher settle
        (tmp_path / "reloadme.py").write_text(VERSIONED_APP.format(version="two"))
        await server.stderr_line(lambda line: "restarting" in line and "reloadme.py" in line, 10)
        await server.stderr_line(lambda line: server.output().count("running on") >= 2, 15)
        assert await app_version(port) == "two"
        children = [
            int(pid)
            for task in os.listdir(f"/proc/{server.pid}/task")
            for pid in open(f"/proc/{server.pid}/task/{task}/children").read().split()
        ]
        assert len(children) == 1
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 20) == 0
        assert not os.path.exists(f"/proc/{children[0]}") or _is_zombie(children[0])
    finally:
        server.kill()


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] == "Z"
