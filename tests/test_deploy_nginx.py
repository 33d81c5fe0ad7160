"""The nginx configuration of docs/deployment.md, run by a real nginx in front of a real
ferrosock server: the page and a WebSocket chat pass through it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from core_server import REPO_DIR
from core_support import http_request
from redis_support import free_port
from websockets.asyncio.client import connect

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
TIMEOUT = 5.0


def documented_nginx_block() -> str:
    text = (REPO_DIR / "docs" / "deployment.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", text, re.S)
    assert match, "docs/deployment.md has no nginx block"
    return match.group(1)


@pytest.fixture(params=["port", "unix socket"])
def nginx_in_front(request, start_server, tmp_path):
    """nginx on a free port in front of the chat, which listens on a port or (``--uds``,
    as the docs' "Over a Unix socket" says) on a socket file."""
    if NGINX is None:
        if os.environ.get("FERROSOCK_REQUIRE_SERVICES"):
            pytest.fail("nginx is not installed and FERROSOCK_REQUIRE_SERVICES is set")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    block = documented_nginx_block()
    if request.param == "port":
        app = start_server("examples.chat_native:app", cwd=REPO_DIR)
        upstream = f"server 127.0.0.1:{app.port};"
    else:
        path = tmp_path / "ferrosock.sock"
        start_server("examples.chat_native:app", "--uds", str(path), cwd=REPO_DIR)
        upstream = f"server unix:{path};"
    port = free_port()
    block = block.replace("server 127.0.0.1:8000;", upstream)
    block = block.replace("listen 80;", f"listen 127.0.0.1:{port};")
    temp = tmp_path / "temp"
    temp.mkdir()
    conf = tmp_path / "nginx.conf"
    # Started by root, nginx's workers would run as nobody, who cannot reach the socket
    # file in the test's private directory.
    as_root = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"daemon off;\n{as_root}worker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {temp};\nproxy_temp_path {temp};\n"
        f"fastcgi_temp_path {temp};\nuwsgi_temp_path {temp};\nscgi_temp_path {temp};\n"
        f"{block}\n}}\n"
    )
    nginx = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if nginx.poll() is not None:
                pytest.fail(f"nginx exited: {nginx.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(5)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(5)


async def test_the_documented_nginx_config_passes_pages_and_websockets(nginx_in_front):
    port = nginx_in_front
    page = await http_request(port, "/")
    assert page.status == 200 and b"WebSocket" in page.body
    url = f"ws://127.0.0.1:{port}/ws/"
    async with (
        connect(url + "1", open_timeout=TIMEOUT) as alice,
        connect(url + "2", open_timeout=TIMEOUT) as bob,
    ):
        await asyncio.sleep(0.2)
        await alice.send("through nginx")
        assert await asyncio.wait_for(alice.recv(), TIMEOUT) == "You wrote: through nginx"
        assert await asyncio.wait_for(alice.recv(), TIMEOUT) == "Client #1 says: through nginx"
        assert await asyncio.wait_for(bob.recv(), TIMEOUT) == "Client #1 says: through nginx"
