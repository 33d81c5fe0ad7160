"""Fan-out throughput: one publisher, many subscribers, on one ferrosock server.

Compares the native ``ferrosock.ConnectionManager`` with the FastAPI docs' Python class
(a loop of ``send_text`` over a list), both served by tests/apps/manager_apps.py: the
publisher asks for a burst of broadcasts, and the clock stops when every subscriber has
received every byte of them. Subscribers are bare sockets that count bytes, so the
client costs little next to the server.

Run: ``.venv/bin/python tests/measure_fanout.py [--subscribers 1000] [--messages 1000]``
(not collected by pytest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from core_server import ServerProcess  # noqa: E402
from core_support import IO_TIMEOUT, handshake_headers, http_get  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

KINDS = {"native": "measure-native", "python": "python-measure"}


class Subscriber(asyncio.Protocol):
    """Completes the handshake, skips its ``joined`` frame, then counts bytes."""

    def __init__(self, request: bytes, meter: Meter) -> None:
        self.request = request
        self.meter = meter
        self.head = bytearray()
        self.joined = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.joined.done():
            self.meter.add(len(data))
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        if not self.head.startswith(b"HTTP/1.1 101"):
            self.joined.set_exception(AssertionError(bytes(self.head[: end + 4]).decode()))
            return
        frame = self.head[end + 4 :]
        if len(frame) < 2 or len(frame) < 2 + (frame[1] & 0x7F):
            return  # the joined frame (always short) is not all here yet
        self.joined.set_result(None)
        self.meter.add(len(frame) - 2 - (frame[1] & 0x7F))

    def connection_lost(self, exc: Exception | None) -> None:
        self.meter.lost(exc)


class Meter:
    """Bytes received by all subscribers; a future for "this many have arrived"."""

    def __init__(self) -> None:
        self.total = 0
        self.target = 0
        self.reached: asyncio.Future[float] | None = None

    def add(self, count: int) -> None:
        self.total += count
        if self.reached is not None and self.total >= self.target and not self.reached.done():
            self.reached.set_result(time.perf_counter())

    def lost(self, exc: Exception | None) -> None:
        """A subscriber's connection ended: the target can no longer be reached."""
        if self.reached is not None and not self.reached.done():
            self.reached.set_exception(ConnectionError(f"a subscriber's connection ended: {exc}"))

    def expect(self, target: int) -> asyncio.Future[float]:
        self.target = target
        self.reached = asyncio.get_running_loop().create_future()
        if self.total >= target:
            self.reached.set_result(time.perf_counter())
        return self.reached


def frame_size(payload: int) -> int:
    return payload + (2 if payload < 126 else 4 if payload < 1 << 16 else 10)


async def subscribe(port: int, path: str, count: int, meter: Meter) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)

    async def one() -> Subscriber:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in handshake_headers(path, port).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        async with gate:
            _, subscriber = await loop.create_connection(
                lambda: Subscriber(request, meter), "127.0.0.1", port
            )
            await asyncio.wait_for(subscriber.joined, IO_TIMEOUT)
        return subscriber

    return list(await asyncio.gather(*(one() for _ in range(count))))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of this process, or of ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    server: ServerProcess, kind: str, args: argparse.Namespace
) -> tuple[list[float], float, float]:
    """Deliveries per second, one value per round; the server's and this client's CPU
    seconds over the measured rounds."""
    group = KINDS[kind]
    meter = Meter()
    subscribers = await subscribe(server.port, f"/sub/{group}", args.subscribers, meter)
    members = (await http_get(server.port, f"/wait/{group}?members={args.subscribers}")).json()
    assert members["len"] == args.subscribers, members
    per_round = args.subscribers * args.messages * frame_size(args.size)
    rates = []
    async with connect(server.ws_url(f"/pub/{group}"), open_timeout=IO_TIMEOUT) as publisher:
        for round_index in range(args.rounds + 1):  # round 0 warms up
            start = round_index * args.messages
            done = meter.expect(meter.total + per_round)
            began = time.perf_counter()
            command = {"op": "burst", "start": start, "count": args.messages, "size": args.size}
            await publisher.send(json.dumps(command))
            ended = await asyncio.wait_for(done, 120)
            await asyncio.wait_for(publisher.recv(), IO_TIMEOUT)
            if round_index:
                rates.append(args.subscribers * args.messages / (ended - began))
            else:
                server_cpu, client_cpu = cpu_seconds(server.pid), cpu_seconds()
        server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, cpu_seconds() - client_cpu
    if kind == "native":
        stats = (await http_get(server.port, f"/state/{group}")).json()["stats"]
        assert stats["dropped"] == 0 and stats["closed_slow"] == 0, stats
    meter.reached = None
    for subscriber in subscribers:
        assert subscriber.transport is not None
        subscriber.transport.close()
    await http_get(server.port, f"/wait/{group}?members=0")
    return rates, server_cpu, client_cpu


async def main(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # No keepalive pings: these subscribers count bytes and never answer them.
    flags = ["--no-access-log", "--ws-ping-interval", "0", *args.server_args]
    server = ServerProcess("apps.manager_apps:app", *flags)
    server.start()
    try:
        print(
            f"{args.subscribers} subscribers, 1 publisher, {args.messages} broadcasts of "
            f"{args.size} B per round, {args.rounds} rounds (deliveries per second)"
        )
        results = {}
        for kind in args.kinds:
            rates, server_cpu, client_cpu = await measure(server, kind, args)
            results[kind] = statistics.median(rates)
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            print(
                f"  {kind:7} median {results[kind]:>12,.0f}   rounds: {shown}\n"
                f"          CPU seconds: server {server_cpu:.2f}, client {client_cpu:.2f}"
            )
        if {"native", "python"} <= results.keys():
            print(f"  native / python: {results['native'] / results['python']:.1f}x")
    finally:
        server.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000, help="broadcasts per round")
    parser.add_argument("--size", type=int, default=64, help="bytes per message")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=["native", "python"])
    parser.add_argument(
        "server_args", nargs="*", help="extra server flags, after --, e.g. -- --io-threads 1"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
