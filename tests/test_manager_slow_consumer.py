"""A member that stops reading never holds up a native ConnectionManager's broadcasts.

One raw client completes its handshake and then never reads again (its receive window is
made small, so TCP pushes back quickly); 20 well-behaved clients read everything. A
publisher broadcasts 5000 messages of 8 KB. The publisher keeps no more than ``WINDOW``
messages ahead of the slowest *healthy* client — so their outboxes stay under half the
limit and only the stalled member may overflow — but it never waits for the stalled one.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from core_support import (
    IO_TIMEOUT,
    OPCODE_CLOSE,
    OPCODE_TEXT,
    RawWebSocket,
    encode_frame,
    handshake_headers,
    http_get,
    outcome,
    recv,
)
from websockets.asyncio.client import connect

OUTBOX_LIMIT = 256 * 1024
MESSAGE_SIZE = 8 * 1024
MESSAGES = 5000
HEALTHY = 20
BURST = 8
WINDOW = OUTBOX_LIMIT // 2 // MESSAGE_SIZE  # messages in flight per healthy client at most
# Growth of the server's resident memory allowed beyond the outbox limits of every socket.
RSS_SLACK = 8 << 20


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def open_stalled_member(port: int, path: str) -> tuple[RawWebSocket, int]:
    """A member that reads its ``joined`` line and then nothing: its socket's receive buffer
    is small and the client stops reading, so the server's writes soon block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(
        asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), IO_TIMEOUT
    )
    reader, writer = await asyncio.open_connection(sock=sock)
    raw = RawWebSocket(reader, writer)
    status, _ = await raw.handshake(path, handshake_headers(path, port))
    assert status == 101
    joined = (await raw.read_frame()).payload.decode()
    assert joined.startswith("joined "), joined
    writer.transport.pause_reading()
    return raw, int(joined.split()[1])


class Progress:
    """How many broadcasts each healthy client has received; awaitable by the publisher."""

    def __init__(self, clients: int) -> None:
        self.counts = [0] * clients
        self._target = 0
        self._reached: asyncio.Future[None] | None = None

    def received(self, client: int) -> None:
        self.counts[client] += 1
        if self._reached is not None and min(self.counts) >= self._target:
            if not self._reached.done():
                self._reached.set_result(None)
            self._reached = None

    async def wait_until_all_reach(self, count: int) -> None:
        if min(self.counts) >= count:
            return
        self._target = count
        self._reached = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self._reached, IO_TIMEOUT)


class HealthyMember(asyncio.Protocol):
    """A member of ``/sub/{group}`` that reads and checks every frame as it comes.

    Hand-parsed frames rather than a full client library: twenty of these must take in
    800 MB while sharing two cores with the server, and checking a frame's header and its
    first 8 bytes is all the test needs. ``wrong`` collects the sequence numbers missed or
    out of place."""

    def __init__(self, index: int, progress: Progress, request: bytes) -> None:
        self.index = index
        self.progress = progress
        self.request = request
        self.buffer = bytearray()
        self.upgraded = False
        self.expected = 0
        self.wrong: list[int] = []
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[str] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, port: int, path: str, index: int, progress: Progress) -> HealthyMember:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in handshake_headers(path, port).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        _, member = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                lambda: cls(index, progress, request), "127.0.0.1", port
            ),
            IO_TIMEOUT,
        )
        joined = await asyncio.wait_for(member.joined, IO_TIMEOUT)
        assert joined.startswith("joined "), joined
        return member

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buffer.startswith(b"HTTP/1.1 101"), bytes(buffer[: end + 4])
            del buffer[: end + 4]
            self.upgraded = True
        position = 0
        while len(buffer) - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                start += 2
                length = int.from_bytes(buffer[position + 2 : start], "big")
            elif length == 127:
                start += 8
                length = int.from_bytes(buffer[position + 2 : start], "big")
            if len(buffer) < start + length:
                break
            self.frame(opcode, buffer, start, length)
            position = start + length
        del buffer[:position]

    def frame(self, opcode: int, buffer: bytearray, start: int, length: int) -> None:
        if not self.joined.done():
            self.joined.set_result(buffer[start : start + length].decode())
            return
        expected = self.expected
        if opcode != OPCODE_TEXT or length != MESSAGE_SIZE:
            self.wrong.append(expected)
        elif buffer[start : start + 8] != b"%08d" % expected:
            self.wrong.append(expected)
        self.expected = expected + 1
        self.progress.received(self.index)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def close(self) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(OPCODE_CLOSE, (1000).to_bytes(2, "big")))
        self.transport.close()
        await asyncio.wait_for(self.lost, IO_TIMEOUT)


async def publish(server, group: str, progress: Progress, rss: list[int]) -> None:
    async with connect(server.ws_url(f"/pub/{group}"), open_timeout=IO_TIMEOUT) as publisher:
        sent = 0
        while sent < MESSAGES:
            count = min(BURST, MESSAGES - sent)
            await progress.wait_until_all_reach(sent + count - WINDOW)
            command = {"op": "burst", "start": sent, "count": count, "size": MESSAGE_SIZE}
            await publisher.send(json.dumps(command))
            sent += count
            assert await recv(publisher) == f"sent {sent}"
            rss.append(resident_bytes(server.pid))


@pytest.mark.parametrize("policy", ["close", "drop"])
async def test_stalled_member_never_holds_up_the_others(start_server, policy):
    group = {"close": "slow-close", "drop": "drop-slow"}[policy]
    server = start_server(
        "apps.manager_apps:app",
        "--outbox-limit",
        str(OUTBOX_LIMIT),
        "--ws-ping-interval",
        "0",
        "--no-access-log",
    )
    progress = Progress(HEALTHY)
    healthy = [
        await HealthyMember.open(server.port, f"/sub/{group}", index, progress)
        for index in range(HEALTHY)
    ]
    stalled, stalled_id = await open_stalled_member(server.port, f"/sub/{group}")
    rss_before = resident_bytes(server.pid)
    rss: list[int] = []

    await publish(server, group, progress, rss)
    await progress.wait_until_all_reach(MESSAGES)
    assert progress.counts == [MESSAGES] * HEALTHY
    for member in healthy:
        assert not member.wrong, f"client {member.index} missed or misordered {member.wrong[:5]}"

    stats = (await http_get(server.port, f"/state/{group}")).json()
    if policy == "close":
        seen = await outcome(server.port, f"{group}:{stalled_id}")
        assert seen["exception"] == "WebSocketDisconnect"
        assert seen["code"] == 1013
        assert stats["stats"]["closed_slow"] == 1
        assert stats["stats"]["dropped"] == 0
        assert stats["len"] == HEALTHY
        assert stalled_id not in stats["active"]
    else:
        assert stats["stats"]["closed_slow"] == 0
        assert stats["stats"]["dropped"] > 0
        assert stats["len"] == HEALTHY + 1
        assert stalled_id in stats["active"]
        # Everything the stalled member missed was dropped, nothing else.
        assert stats["stats"]["delivered"] + stats["stats"]["dropped"] == (HEALTHY + 1) * MESSAGES
    assert stats["stats"]["broadcasts"] == MESSAGES

    outbox_bound = (HEALTHY + 2) * OUTBOX_LIMIT
    growth = max(rss) - rss_before
    assert growth <= outbox_bound + RSS_SLACK, (
        f"server RSS grew by {growth >> 10} KiB (from {rss_before >> 10} KiB), more than the "
        f"outbox limits ({outbox_bound >> 10} KiB) + {RSS_SLACK >> 10} KiB"
    )
    stalled.vanish()
    for member in healthy:
        await member.close()


# ---- the default policy, "wait": slower readers lose nothing ---------------------------

READERS = 5
BURST_MESSAGES = 2000
BURST_SIZE = 8 * 1024
SLOW_TIMEOUT = 2.0
# Time past SLOW_TIMEOUT for the stalled member's outbox to fill and the close to be seen,
# on a loaded machine.
CLOSE_SLACK = 4.0
BACKLOG_LIMIT = 8 << 20  # ConnectionManager's default


async def sample_backlog(port: int, group: str, samples: list[int], stop: asyncio.Event) -> None:
    """The manager's backlog (bytes waiting for its fan-out), every 20 ms until ``stop``."""
    while not stop.is_set():
        samples.append((await http_get(port, f"/state/{group}")).json()["stats"]["backlog"])
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except TimeoutError:
            pass


async def read_sequence(websocket, count: int) -> list[int]:
    """Read ``count`` broadcasts of the burst command; the sequence numbers received."""
    numbers = []
    for _ in range(count):
        message = await recv(websocket)
        assert len(message) == BURST_SIZE
        numbers.append(int(message[:8]))
    return numbers


async def test_slower_readers_get_every_message_and_a_stalled_one_is_closed(start_server):
    """Five clients reading as fast as a Python client can are slower than the publisher:
    under "wait" each gets all 2000 messages in order, while a member that never reads
    is closed with 1013 within ``slow_consumer_timeout`` and the others then go on."""
    group = "wait-readers"
    server = start_server(
        "apps.manager_apps:app",
        "--slow-consumer-timeout",
        str(SLOW_TIMEOUT),
        "--ws-ping-interval",
        "0",
        "--no-access-log",
    )
    readers = [
        await connect(server.ws_url(f"/sub/{group}"), open_timeout=IO_TIMEOUT)
        for _ in range(READERS)
    ]
    for reader in readers:
        assert (await recv(reader)).startswith("joined ")
    stalled, stalled_id = await open_stalled_member(server.port, f"/sub/{group}")
    loop = asyncio.get_running_loop()
    backlog: list[int] = []
    sampled = asyncio.Event()
    sampler = asyncio.ensure_future(sample_backlog(server.port, group, backlog, sampled))
    async with connect(server.ws_url(f"/pub/{group}"), open_timeout=IO_TIMEOUT) as publisher:
        started = loop.time()
        command = {"op": "burst", "start": 0, "count": BURST_MESSAGES, "size": BURST_SIZE}
        await publisher.send(json.dumps(command))
        received = [
            asyncio.ensure_future(read_sequence(reader, BURST_MESSAGES)) for reader in readers
        ]
        seen = await outcome(server.port, f"{group}:{stalled_id}")
        closed_after = loop.time() - started
        assert seen["exception"] == "WebSocketDisconnect", seen
        assert (seen["code"], seen["reason"]) == (1013, "slow consumer: no progress"), seen
        assert closed_after <= SLOW_TIMEOUT + CLOSE_SLACK, closed_after
        for numbers in await asyncio.gather(*received):
            assert numbers == list(range(BURST_MESSAGES))
        assert await recv(publisher) == f"sent {BURST_MESSAGES}"
    sampled.set()
    await sampler
    # While the fan-out waited for the stalled member the publisher got ahead (the burst
    # is nearly twice the backlog limit), and then it waited too: the queue stayed bounded.
    assert BACKLOG_LIMIT // 2 <= max(backlog) <= BACKLOG_LIMIT + BURST_SIZE, max(backlog)

    stats = (await http_get(server.port, f"/state/{group}")).json()["stats"]
    assert stats["closed_slow"] == 1
    assert stats["dropped"] == 0
    queued_to_stalled = stats["delivered"] - READERS * BURST_MESSAGES
    # The stalled member's queued messages were discarded: once it reads again, the close
    # comes after what its socket buffers held, not after a full outbox.
    stalled.writer.transport.resume_reading()
    before_close = 0
    while (frame := await stalled.read_frame()).opcode != OPCODE_CLOSE:
        before_close += 1
    assert frame.close_code == 1013
    outbox_messages = (1 << 20) // BURST_SIZE
    assert queued_to_stalled - before_close >= outbox_messages // 2, (
        f"{before_close} of the {queued_to_stalled} messages queued to the stalled member "
        "reached it before the close"
    )
    for reader in readers:
        await reader.close()


async def test_a_waiting_fanout_holds_only_its_manager_and_ends_when_the_member_does(
    start_server,
):
    """With a long timeout, one manager's fan-out waits for a member that stopped reading:
    another manager's broadcasts still arrive at once, and when the stalled member goes
    away the waiting fan-out goes on at once, not at the timeout."""
    long_timeout = 60.0
    held, free = "wait-held", "wait-free"
    server = start_server(
        "apps.manager_apps:app",
        "--slow-consumer-timeout",
        str(long_timeout),
        "--ws-ping-interval",
        "0",
        "--no-access-log",
    )
    reader = await connect(server.ws_url(f"/sub/{held}"), open_timeout=IO_TIMEOUT)
    other = await connect(server.ws_url(f"/sub/{free}"), open_timeout=IO_TIMEOUT)
    for client in (reader, other):
        assert (await recv(client)).startswith("joined ")
    stalled, stalled_id = await open_stalled_member(server.port, f"/sub/{held}")
    loop = asyncio.get_running_loop()
    count = 1000  # 8 MB: more than the stalled member's socket buffers and outbox hold
    async with (
        connect(server.ws_url(f"/pub/{held}"), open_timeout=IO_TIMEOUT) as held_publisher,
        connect(server.ws_url(f"/pub/{free}"), open_timeout=IO_TIMEOUT) as free_publisher,
    ):
        command = {"op": "burst", "start": 0, "count": count, "size": BURST_SIZE}
        await held_publisher.send(json.dumps(command))
        # The reader gets what came before the stalled member filled up, then nothing.
        numbers = []
        while True:
            try:
                message = await asyncio.wait_for(reader.recv(), 1.0)
            except TimeoutError:
                break
            numbers.append(int(message[:8]))
        assert 0 < len(numbers) < count

        started = loop.time()
        for index in range(10):
            await free_publisher.send(json.dumps({"op": "broadcast", "text": f"free {index}"}))
        assert [await recv(other) for _ in range(10)] == [f"free {i}" for i in range(10)]
        assert loop.time() - started < IO_TIMEOUT

        started = loop.time()
        stalled.writer.transport.abort()
        numbers += await read_sequence(reader, count - len(numbers))
        assert numbers == list(range(count))
        assert loop.time() - started < long_timeout / 4
        assert await recv(held_publisher) == f"sent {count}"
    seen = await outcome(server.port, f"{held}:{stalled_id}")
    assert seen["code"] == 1006, seen
    for client in (reader, other):
        await client.close()
