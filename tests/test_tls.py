"""wss:// and https:// on a real ``ferrosock run``, with certificates made here by the
``openssl`` command: a CA, a server certificate for 127.0.0.1, a client certificate, and
an encrypted PKCS#8 key."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from core_server import TESTS_DIR
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

TIMEOUT = 10

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem, server.pem + server.key (SAN 127.0.0.1), client.pem + client.key,
    server-encrypted.key (password "sesame"), other-ca.pem (signs nothing here)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ferrosock test CA",
        cwd=d,
    )  # fmt: skip
    (d / "server.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=d,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.cnf",
            cwd=d,
        )  # fmt: skip
    _openssl(
        "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "server.key",
        "-out", "server-encrypted.key", "-passout", "pass:sesame",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=other",
        cwd=d,
    )  # fmt: skip
    return d


def _client_context(pki: Path, certificate: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if certificate is not None:
        context.load_cert_chain(str(pki / f"{certificate}.pem"), str(pki / f"{certificate}.key"))
    return context


def _tls_args(pki: Path, key: str = "server.key") -> list[str]:
    return ["--ssl-certfile", str(pki / "server.pem"), "--ssl-keyfile", str(pki / key)]


async def _echo(url: str, context: ssl.SSLContext, messages: list[str | bytes]) -> list:
    async with connect(url, ssl=context, open_timeout=TIMEOUT) as websocket:
        answers = []
        for message in messages:
            await websocket.send(message)
            answers.append(await asyncio.wait_for(websocket.recv(), TIMEOUT))
        return answers


async def test_wss_echoes_small_and_large_messages_and_says_wss(start_server, pki):
    server = start_server("apps.secure:app", *_tls_args(pki))
    url = f"wss://127.0.0.1:{server.port}"
    big = "x" * 300_000  # many TLS records, read and written across several rounds
    answers = await _echo(url + "/echo", _client_context(pki), ["hello", big, b"\x00\x01"])
    assert answers == ["hello", big, b"\x00\x01"]
    async with connect(url + "/where", ssl=_client_context(pki), open_timeout=TIMEOUT) as ws:
        where = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert where == {"scheme": "wss", "url": f"wss://127.0.0.1:{server.port}/where"}


async def test_https_serves_http_routes_on_the_same_port(start_server, pki):
    server = start_server("apps.secure:app", *_tls_args(pki))
    context = _client_context(pki)

    def fetch() -> tuple[int, dict]:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{server.port}/where", context=context, timeout=TIMEOUT
        ) as response:
            return response.status, json.loads(response.read())

    status, where = await asyncio.to_thread(fetch)
    assert status == 200
    assert where == {"scheme": "https", "url": f"https://127.0.0.1:{server.port}/where"}


async def test_plain_ws_to_a_tls_port_fails_and_the_server_keeps_serving(start_server, pki):
    server = start_server("apps.secure:app", *_tls_args(pki))
    with pytest.raises((InvalidMessage, OSError, asyncio.TimeoutError)):
        async with connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=3):
            pass
    answers = await _echo(f"wss://127.0.0.1:{server.port}/echo", _client_context(pki), ["ok"])
    assert answers == ["ok"]


async def test_an_encrypted_key_is_read_with_its_password(start_server, pki):
    server = start_server(
        "apps.core:app",
        *_tls_args(pki, key="server-encrypted.key"),
        "--ssl-keyfile-password",
        "sesame",
    )
    answers = await _echo(f"wss://127.0.0.1:{server.port}/echo", _client_context(pki), ["ok"])
    assert answers == ["ok"]


async def test_a_required_client_certificate_is_checked(start_server, pki):
    server = start_server(
        "apps.core:app",
        *_tls_args(pki),
        "--ssl-ca-certs",
        str(pki / "ca.pem"),
        "--ssl-cert-reqs",
        "2",
    )
    url = f"wss://127.0.0.1:{server.port}/echo"
    assert await _echo(url, _client_context(pki, "client"), ["mine"]) == ["mine"]
    # No certificate: the TLS handshake is refused, nothing reaches the app.
    with pytest.raises((ssl.SSLError, OSError, InvalidMessage)):
        await _echo(url, _client_context(pki), ["no certificate"])
    # The server still serves clients that have one.
    assert await _echo(url, _client_context(pki, "client"), ["again"]) == ["again"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--ssl-certfile", "missing.pem", "--ssl-keyfile", "server.key"], "ssl_certfile"),
        (["--ssl-certfile", "server.pem", "--ssl-keyfile", "missing.key"], "ssl_keyfile"),
        (["--ssl-certfile", "server.pem", "--ssl-keyfile", "client.key"], "ssl_keyfile"),
        (
            ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server-encrypted.key"],
            "ssl_keyfile_password",
        ),
        (
            [
                *("--ssl-certfile", "server.pem", "--ssl-keyfile", "server-encrypted.key"),
                *("--ssl-keyfile-password", "wrong"),
            ],
            "ssl_keyfile_password",
        ),
        (["--ssl-certfile", "server.pem"], "ssl_keyfile"),
        (
            ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key", "--ssl-cert-reqs", "2"],
            "ssl_ca_certs",
        ),
        (["--ssl-cert-reqs", "3"], "ssl_cert_reqs"),
    ],
)
def test_bad_tls_settings_fail_at_start_naming_the_setting(pki, args, named):
    # Relative names are the pki directory's files.
    result = subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", "apps.secure:app", "--port", "0", *args],
        cwd=pki,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
