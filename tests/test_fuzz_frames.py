"""Random and mutated frames against a live server: thousands of frames over many short raw
connections (a seeded generator, so a failure can be replayed), and after each batch a
normal client on the same server still gets its echo, the server logged no panic, and
every close it sent carries a code RFC 6455 allows on the wire."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from core_support import OPCODE_CLOSE, RawWebSocket, http_get, recv
from websockets.asyncio.client import connect

SEED = 6455
BATCHES = 10
CONNECTIONS_PER_BATCH = 60
# How long a connection waits for the server's answer before dropping the socket.
ANSWER_WAIT = 0.5
# Frame lengths around the header's encoding boundaries.
EDGE_LENGTHS = (0, 1, 125, 126, 127, 65535, 65536)
CONTROL_OPCODES = (0x8, 0x9, 0xA)
DATA_OPCODES = (0x0, 0x1, 0x2)
RESERVED_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)


def close_code_allowed_on_the_wire(code: int) -> bool:
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def payload(rng: random.Random, opcode: int) -> bytes:
    if opcode == 0x8 and rng.random() < 0.7:
        code = rng.choice([1000, 1001, 1002, 1005, 1006, 1016, 2999, 3000, 4999, 5000, 0])
        reason = rng.choice([b"", b"bye", "\u00e9t\u00e9".encode(), b"\xff\xfe"])
        return struct.pack("!H", code) + reason
    if opcode in (0x0, 0x1) and rng.random() < 0.6:
        text = "".join(rng.choice("ab\u00e9\u20ac\U0001f600 ") for _ in range(rng.randrange(60)))
        return text.encode()
    size = rng.choice(EDGE_LENGTHS) if rng.random() < 0.15 else rng.randrange(140)
    return rng.randbytes(size)


def frame(rng: random.Random) -> bytes:
    """One client frame, mostly well-formed, often with something wrong."""
    kind = rng.random()
    if kind < 0.55:
        opcode = rng.choice(DATA_OPCODES)
    elif kind < 0.9:
        opcode = rng.choice(CONTROL_OPCODES)
    else:
        opcode = rng.choice(RESERVED_OPCODES)
    body = payload(rng, opcode)
    fin = rng.random() < 0.8
    reserved = rng.choice((0x10, 0x20, 0x40)) if rng.random() < 0.05 else 0
    masked = rng.random() < 0.95
    declared = len(body)
    if rng.random() < 0.05:
        declared = rng.choice((0, declared + 1, max(declared - 1, 0), 1 << 40, (1 << 63) + 1))
    first = (0x80 if fin else 0) | reserved | opcode
    mask_bit = 0x80 if masked else 0
    if declared < 126 and rng.random() < 0.9:
        head = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16 and rng.random() < 0.9:
        head = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, min(declared, (1 << 64) - 1))
    if not masked:
        return head + body
    mask = rng.randbytes(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))


def mutated(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    if data and rng.random() < 0.3:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if data and rng.random() < 0.1:
        del data[rng.randrange(len(data)) :]
    if rng.random() < 0.1:
        data += rng.randbytes(rng.randrange(1, 40))
    return bytes(data)


async def send_and_watch(port: int, wire: bytes, pieces: int, vanish: bool) -> int | None:
    """Send ``wire`` in ``pieces`` writes; the close code the server answered, if any."""
    raw = await RawWebSocket.open(port, "/echo")
    try:
        step = max(1, len(wire) // pieces)
        for start in range(0, len(wire), step):
            raw.writer.write(wire[start : start + step])
            await raw.writer.drain()
        if vanish:
            return None
        try:
            async with asyncio.timeout(ANSWER_WAIT):
                while True:
                    answer = await raw._read_frame()
                    if answer.opcode == OPCODE_CLOSE:
                        code = answer.close_code
                        assert code is None or close_code_allowed_on_the_wire(code), code
                        assert len(answer.payload) != 1, answer
                        return code
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None
    except ConnectionError:
        return None
    finally:
        raw.vanish()


def no_panic(server) -> None:
    logged = "\n".join(server.stderr_lines)
    assert "panicked" not in logged and "PanicException" not in logged, server.output()


@pytest.fixture
def server(start_server):
    return start_server("apps.limits:app", "--no-access-log")


async def test_random_and_mutated_frames_never_break_the_server(server):
    rng = random.Random(SEED)
    frames_sent = 0
    closes: dict[int | None, int] = {}
    async with connect(server.ws_url("/echo")) as witness:
        for batch in range(BATCHES):
            jobs = []
            for _ in range(CONNECTIONS_PER_BATCH):
                if rng.random() < 0.1:
                    wire = rng.randbytes(rng.randrange(1, 300))
                    frames_sent += 1
                else:
                    count = rng.randrange(1, 12)
                    wire = mutated(rng, b"".join(frame(rng) for _ in range(count)))
                    frames_sent += count
                pieces = rng.choice((1, 1, 2, 7))
                jobs.append(send_and_watch(server.port, wire, pieces, rng.random() < 0.15))
            for code in await asyncio.gather(*jobs):
                closes[code] = closes.get(code, 0) + 1
            await witness.send(f"batch {batch}")
            assert await recv(witness) == f"batch {batch}"
            no_panic(server)
    assert frames_sent >= 3000, frames_sent
    # The input was varied enough to reach the decoder's main outcomes.
    assert {1002, 1007} <= set(closes), closes

    async def state() -> dict:
        return (await http_get(server.port, "/state")).json()

    # Every fuzzed connection ends: the engine and the app come back to rest.
    async with asyncio.timeout(15):
        while (seen := await state())["open_connections"] or seen["running_handlers"]:
            await asyncio.sleep(0.1)
    no_panic(server)
