"""Scale-out through a real Redis: two (or more) real server processes of one app, clients
on each, and the native manager's calls reaching members wherever they are connected."""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from core_server import REPO_DIR, TESTS_DIR
from core_support import http_request
from redis_support import RedisServer, free_port, require_redis
from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 5.0


@pytest.fixture
def redis():
    require_redis()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(start_server, redis):
    """Two processes of ``tests/apps/cluster.py`` sharing ``redis``."""

    def start(*extra: str):
        return start_server("apps.cluster:app", "--broadcast-backend", redis.url, *extra)

    servers = [start(), start()]
    for server in servers:
        server.wait_for_stderr(lambda line: "broadcast backend" in line and "connected" in line, 10)
    return servers


async def member(server, room: str = "-") -> tuple[ClientConnection, int]:
    websocket = await connect(server.ws_url(f"/ws/{room}"), open_timeout=TIMEOUT)
    hello = json.loads(await asyncio.wait_for(websocket.recv(), TIMEOUT))
    return websocket, hello["id"]


async def command(websocket: ClientConnection, **fields) -> None:
    await websocket.send(json.dumps(fields))


async def reply(websocket: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(websocket.recv(), TIMEOUT))


async def nothing_arrives(websocket: ClientConnection, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        message = await asyncio.wait_for(websocket.recv(), within)
        pytest.fail(f"unexpected message {message!r}")


async def stats(server) -> dict:
    return (await http_request(server.port, "/stats")).json()


async def until(predicate, timeout: float, what: str):
    """Poll ``predicate`` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout} s")


async def test_broadcast_reaches_both_processes_in_order(cluster):
    a, b = cluster
    (sender, _), (near, _), (far, _) = [await member(s) for s in (a, a, b)]
    for i in range(200):
        await command(sender, broadcast=f"message {i}")
    for websocket in (sender, near, far):
        assert [await websocket.recv() for _ in range(200)] == [f"message {i}" for i in range(200)]
    assert (await stats(a))["published"] >= 200
    assert (await stats(b))["received"] >= 200


async def test_rooms_exclude_and_bytes_cross_processes(cluster):
    a, b = cluster
    sender, _ = await member(a, "blue")
    blue_far, _ = await member(b, "blue")
    red_far, _ = await member(b, "red")
    # b subscribes to "blue" when its first local member joins: wait until it has.
    await until(lambda: _room_delivered(sender, blue_far, "blue", "probe"), 5, "room subscription")
    await command(sender, broadcast="blue only", room="blue", exclude_me=True)
    assert await blue_far.recv() == "blue only"
    await nothing_arrives(sender)
    await nothing_arrives(red_far)
    await command(sender, bytes="raw", room="red")
    assert await red_far.recv() == b"raw"
    await nothing_arrives(blue_far)


async def test_send_to_a_socket_on_the_other_process(cluster):
    a, b = cluster
    sender, sender_id = await member(a)
    target, target_id = await member(b)
    assert sender_id != target_id and sender_id >> 32 != target_id >> 32
    assert max(sender_id, target_id) < 2**53
    await command(sender, to=target_id, text="for you")
    assert await reply(sender) == {"sent": True}
    assert await target.recv() == "for you"
    await command(target, personal=sender_id, text="and back")
    assert await sender.recv() == "and back"


async def test_ids_never_collide_across_processes(cluster):
    ids = []
    for server in cluster:
        for _ in range(20):
            websocket, connection_id = await member(server)
            ids.append(connection_id)
            await websocket.close()
    assert len(set(ids)) == len(ids)
    assert len({i >> 32 for i in ids}) == 2  # one node tag per process


async def test_cluster_count_and_members_ask_every_process(cluster):
    a, b = cluster
    here, here_id = await member(a, "lobby")
    _, there_id = await member(b, "lobby")
    _, other_id = await member(b, "-")
    await command(here, count="lobby")
    assert await reply(here) == {"count": 2}
    await command(here, members="lobby")
    assert await reply(here) == {"members": sorted([here_id, there_id])}
    await command(here, count=None)
    assert await reply(here) == {"count": 3}
    await command(here, members=None)
    assert await reply(here) == {"members": sorted([here_id, there_id, other_id])}
    local = await stats(a)
    assert local["local"] == 1  # len(manager) stays local


async def test_workers_behave_as_one_server(start_server, redis):
    port = free_port()
    server = start_server(
        "apps.cluster:app", "--port", str(port), "--workers", "3", "--broadcast-backend", redis.url
    )
    server.wait_for_stderr(lambda line: server.output().count("connected (manager") >= 3, 15)
    members = []
    while len({i >> 32 for _, i in members}) < 3 and len(members) < 60:
        members.append(await member(server))
    # Each worker logged "connected" once its channels were subscribed.
    assert len({i >> 32 for _, i in members}) == 3, "connections did not reach every worker"
    sender = members[0][0]
    await command(sender, broadcast="to every worker")
    for websocket, _ in members:
        assert await asyncio.wait_for(websocket.recv(), TIMEOUT) == "to every worker"


async def test_redis_down_at_start_then_up(start_server):
    require_redis()
    port = free_port()
    url = f"redis://user:hunter2@127.0.0.1:{port}/0"
    server = start_server("apps.cluster:app", "--broadcast-backend", url)
    line = server.wait_for_stderr(lambda line: "unreachable" in line, 10)
    assert "broadcast_backend" in line and f"user:***@127.0.0.1:{port}" in line
    assert "hunter2" not in "\n".join(server.stderr_lines)
    # Local traffic is served meanwhile.
    sender, _ = await member(server)
    await command(sender, broadcast="local")
    assert await sender.recv() == "local"
    assert (await stats(server))["backend_state"] == "down"
    await asyncio.sleep(1.5)
    assert server.output().count("unreachable") == 1, "the outage is logged once"
    redis = RedisServer(port, "--user", "user", "on", ">hunter2", "~*", "&*", "+@all").start()
    try:
        await until(lambda: _state_is(server, "connected"), 12, "reconnect after Redis came up")
    finally:
        redis.stop()


async def _state_is(server, state: str) -> bool:
    return (await stats(server))["backend_state"] == state


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--broadcast-backend", "http://user:hunter2@127.0.0.1:6379"),
        ("--broadcast-backend", "redis://127.0.0.1:notaport"),
        ("--broadcast-publish-limit", "0"),
        ("--broadcast-presence-timeout", "-1"),
    ],
)
def test_a_bad_backend_setting_fails_at_startup_naming_it(flag, value):
    result = subprocess.run(
        [sys.executable, "-m", "ferrosock", "run", "apps.cluster:app", flag, value],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert flag[2:].replace("-", "_") in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


async def test_redis_killed_and_restarted_mid_run(cluster, redis):
    a, b = cluster
    sender, _ = await member(a)
    near, _ = await member(a)
    far, _ = await member(b)
    redis.kill()
    await until(lambda: _state_is(a, "down"), 5, "noticing Redis is gone")
    await command(sender, broadcast="while down")
    assert await near.recv() == "while down"  # local delivery goes on
    await nothing_arrives(far)
    redis.start()  # the same port, a fresh server
    restarted = time.monotonic()
    # "while down" waits in a's publish queue; b gets it only if b resubscribed before a
    # published it (at most once across processes), so it is skipped below.
    # Delivery across processes resumes within 2 s of Redis being back.
    probes = 0
    while True:
        probes += 1
        await command(sender, broadcast=f"probe {probes}")
        try:
            message = await asyncio.wait_for(_next_non_resync(far), 0.1)
            if message == "while down":
                message = await asyncio.wait_for(_next_non_resync(far), 0.1)
            assert message.startswith("probe ")
            break
        except TimeoutError:
            assert time.monotonic() - restarted < 2.0, "no delivery 2 s after Redis came back"
    for server in (a, b):
        await until(lambda s=server: _hook_ran(s), 5, "the reconnect hook")
        counters = await stats(server)
        assert counters["reconnects"] == 1 and counters["backend_state"] == "connected"
    # a's hook broadcast "resync" (far's copies were skipped while probing).
    await command(sender, broadcast="after")
    for websocket in (sender, near):
        seen = []
        while not seen or seen[-1] != "after":
            seen.append(await asyncio.wait_for(websocket.recv(), TIMEOUT))
        assert "resync" in seen


async def _hook_ran(server) -> bool:
    return (await stats(server))["hook_calls"] == 1


async def _next_non_resync(websocket: ClientConnection) -> str:
    while True:
        message = await asyncio.wait_for(websocket.recv(), TIMEOUT)
        if message != "resync":
            return message


async def test_paused_redis_drops_only_what_overflows_and_recovers(start_server, redis):
    limit = 64 * 1024
    servers = [
        start_server(
            "apps.cluster:app",
            "--broadcast-backend",
            redis.url,
            "--broadcast-publish-limit",
            str(limit),
        )
        for _ in range(2)
    ]
    a, b = servers
    for server in servers:
        await until(lambda s=server: _state_is(s, "connected"), 10, "connecting")
    sender, _ = await member(a)
    far, _ = await member(b)
    redis.pause()
    try:
        started = time.monotonic()
        await command(sender, burst=200, size=1024)
        # The loop never waits on Redis: every local copy arrives at once.
        got = [await asyncio.wait_for(sender.recv(), TIMEOUT) for _ in range(201)]
        got.remove(json.dumps({"burst_done": 200}, separators=(",", ":")))
        assert [int(m[:6]) for m in got] == list(range(200))
        assert time.monotonic() - started < 2
        counters = await stats(a)
        assert counters["publish_dropped"] > 0
        assert counters["publish_queue"] <= limit
        await until(lambda: _state_is(a, "down"), 6, "a PING timeout on a paused Redis")
    finally:
        redis.resume()
    await until(lambda: _state_is(a, "connected"), 12, "reconnect after SIGCONT")
    await until(lambda: _state_is(b, "connected"), 12, "reconnect after SIGCONT")
    delivered = [m for m in await _drain(far) if m != "resync"]
    # Only counted drops are lost, nothing is repeated and the order holds.
    dropped = (await stats(a))["publish_dropped"]
    assert len(delivered) + dropped >= 200
    numbers = [int(m[:6]) for m in delivered]
    assert numbers == sorted(set(numbers))
    await command(sender, broadcast="after pause")
    assert await _next_non_resync(far) == "after pause"


async def _drain(websocket: ClientConnection) -> list:
    messages = []
    try:
        while True:
            messages.append(await asyncio.wait_for(websocket.recv(), 0.5))
    except TimeoutError:
        return messages


async def test_a_thousand_clients_on_two_processes_get_a_burst_intact(cluster):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    clients = await asyncio.gather(*[member(cluster[i % 2]) for i in range(1000)])
    sender = clients[0][0]  # every member joined before its {"id"} was sent
    await command(sender, burst=100)
    expected = [f"{i:06d}" for i in range(100)]

    async def receive_all(websocket: ClientConnection) -> list:
        return [await asyncio.wait_for(websocket.recv(), 20) for _ in range(100)]

    results = await asyncio.gather(*[receive_all(ws) for ws, _ in clients[1:]])
    assert all(result == expected for result in results)
    await asyncio.gather(*[ws.close() for ws, _ in clients])


async def test_redis_chat_example_across_two_processes(start_server, redis):
    servers = [
        start_server("examples.redis_chat:app", "--broadcast-backend", redis.url, cwd=REPO_DIR)
        for _ in range(2)
    ]
    for server in servers:
        await until(lambda s=server: _backend_connected(s), 10, "connecting")
    alice = await connect(servers[0].ws_url("/ws/lobby/alice"), open_timeout=TIMEOUT)
    bob = await connect(servers[1].ws_url("/ws/lobby/bob"), open_timeout=TIMEOUT)
    alice_id = (await reply(alice))["id"]
    # Alice's "joined", still on its way through Redis, may reach bob before his welcome.
    bob_id = (await _reply_skipping(bob, "joined"))["id"]
    assert await reply(alice) == {"joined": "bob", "id": bob_id, "room": "lobby"}
    await alice.send(json.dumps({"say": "hello"}))
    assert await reply(alice) == {"you": "hello"}
    # Alice's own "joined" reaches bob only if bob's socket was there before it went out.
    assert await _reply_skipping(bob, "joined") == {
        "from": "alice",
        "id": alice_id,
        "room": "lobby",
        "say": "hello",
    }
    await bob.send(json.dumps({"to": alice_id, "say": "psst"}))
    assert await reply(bob) == {"sent": True, "to": alice_id}
    assert await reply(alice) == {"from": "bob", "id": bob_id, "private": "psst"}
    await alice.send(json.dumps({"who": True}))
    assert await reply(alice) == {"room": "lobby", "members": sorted([alice_id, bob_id])}


async def _reply_skipping(websocket: ClientConnection, key: str) -> dict:
    while True:
        message = await reply(websocket)
        if key not in message:
            return message


async def _backend_connected(server) -> bool:
    return "connected (manager" in server.output()


def _make_certificates(directory) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    subject = ("-subj", "/CN=ferrosock test CA")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        *subject,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )
    return str(directory / "ca.crt"), str(directory / "server.crt"), str(directory / "server.key")


async def test_rediss_carries_broadcasts_over_tls(start_server, tmp_path, monkeypatch):
    ca, certificate, key = _make_certificates(tmp_path)
    tls_port = free_port()
    redis = RedisServer(
        None,
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        certificate,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        ca,
        "--tls-auth-clients",
        "no",
    ).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", ca)  # the engine trusts the system's CAs and this
        url = f"rediss://127.0.0.1:{tls_port}/0"
        servers = [start_server("apps.cluster:app", "--broadcast-backend", url) for _ in range(2)]
        for server in servers:
            await until(lambda s=server: _state_is(s, "connected"), 10, "connecting over TLS")
        sender, _ = await member(servers[0])
        far, _ = await member(servers[1])
        await command(sender, broadcast="over tls")
        assert await far.recv() == "over tls"
    finally:
        redis.stop()


def test_workers_without_a_backend_warn_that_managers_are_partitioned(start_server):
    server = start_server("apps.cluster:app", "--port", str(free_port()), "--workers", "2")
    line = server.wait_for_stderr(lambda line: "partitioned" in line, 10)
    assert "WARNING" in line and "--broadcast-backend" in line


def test_workers_without_a_manager_do_not_warn(start_server):
    port = free_port()
    server = start_server("examples.echo:app", "--port", str(port), "--workers", "2", cwd=REPO_DIR)
    server.wait_for_stderr(lambda line: server.output().count("running on") >= 2, 10)
    assert "partitioned" not in server.output()


async def test_cluster_queries_fail_clearly_when_a_process_or_redis_is_gone(cluster, redis):
    a, b = cluster
    asker, _ = await member(a)
    await member(b)
    b.send_signal(signal.SIGSTOP)  # b is subscribed but cannot answer
    try:
        await command(asker, count=None)
        answer = await reply(asker)
        assert answer["error"] == "TimeoutError" and "0 of 1" in answer["why"]
    finally:
        b.send_signal(signal.SIGCONT)
    redis.kill()
    await until(lambda: _state_is(a, "down"), 5, "noticing Redis is gone")
    await command(asker, members=None)
    answer = await reply(asker)
    assert answer["error"] == "ConnectionError" and "down" in answer["why"]


async def test_two_managers_with_one_name_on_one_backend_are_refused(redis):
    from ferrosock import ConnectionManager
    from ferrosock.config import Config
    from ferrosock.manager import configure_backends

    first = ConnectionManager(backend=redis.url, name="twin")
    second = ConnectionManager(backend=redis.url, name="twin")
    with pytest.raises(ValueError, match="two ConnectionManagers named 'twin'"):
        configure_backends(Config(), asyncio.get_running_loop())
    del first, second


def _subscribers(redis, channel: str) -> int:
    """PUBSUB NUMSUB's count for one channel, from its raw RESP reply."""
    reply = redis.command("PUBSUB", "NUMSUB", channel).split(b"\r\n")
    return int(reply[-2].lstrip(b":"))


async def test_a_room_is_subscribed_while_it_has_local_members_without_churn(cluster, redis):
    a, _ = cluster
    channel = "ferrosock:default:room:churn"
    assert _subscribers(redis, channel) == 0
    first, _ = await member(a, "churn")
    await until(lambda: _subscribers(redis, channel) == 1, 5, "subscribing the room")
    # Members coming and going quickly keep the one subscription.
    for _ in range(5):
        await first.close()
        first, _ = await member(a, "churn")
        assert _subscribers(redis, channel) == 1
    await first.close()
    await asyncio.sleep(1.0)
    assert _subscribers(redis, channel) == 1, "unsubscribed before the linger time"
    await until(lambda: _subscribers(redis, channel) == 0, 5, "unsubscribing the room")


async def test_rooms_are_resubscribed_after_redis_restarts(cluster, redis):
    a, b = cluster
    sender, _ = await member(a, "green")
    far, _ = await member(b, "green")
    await until(lambda: _room_delivered(sender, far, "green", "before"), 5, "room subscription")
    redis.kill()
    await until(lambda: _state_is(b, "down"), 5, "noticing Redis is gone")
    redis.start()
    await until(lambda: _state_is(b, "connected"), 5, "b reconnecting")
    await until(lambda: _state_is(a, "connected"), 5, "a reconnecting")
    # b's only subscription to the room came back with the reconnect.
    await until(lambda: _room_delivered(sender, far, "green", "after"), 3, "room after restart")
    assert _subscribers(redis, "ferrosock:default:room:green") == 2


async def _room_delivered(sender, receiver, room: str, text: str) -> bool:
    await command(sender, broadcast=text, room=room, exclude_me=True)
    try:
        while True:
            if await asyncio.wait_for(receiver.recv(), 0.3) == text:
                return True
    except TimeoutError:
        return False
