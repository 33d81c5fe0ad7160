"""Paired before/after runs of two ferrosock builds, alternating, one window each.

    python3 bench/pairs.py [--native] PYTHON_A PYTHON_B PAIRS WORKLOAD [loadgen options...]

Each round starts the benchmark app (``bench/apps/ferrosock_app.py``; with ``--native``
its ``native_app``, whose manager is ferrosock's own) under one build's
Python pinned to CPU 0, runs ``bench/target/release/loadgen WORKLOAD`` pinned to CPU 1
against it, and stops it; A and B alternate, so both see the same stretch of a noisy
machine. Prints server CPU µs per operation, throughput and p50 for each window, and the
median CPU of each build. Loopback only; every server started is stopped by its PID."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "target" / "release" / "loadgen"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def window(python: str, app_name: str, workload: str, options: list[str]) -> dict:
    port = free_port()
    app = ["-m", "ferrosock", "run", f"ferrosock_app:{app_name}", "--app-dir", str(BENCH / "apps")]
    listen = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(["taskset", "-c", "0", python, *app, *listen, "--backlog", "4096"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"{python}: the server did not start") from None
                time.sleep(0.05)
        command = [str(LOADGEN), workload, "--port", str(port), "--server-pid", str(server.pid)]
        done = subprocess.run(
            ["taskset", "-c", "1", *command, *options], capture_output=True, text=True, timeout=300
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    args = sys.argv[1:]
    app_name = "app"
    if args[:1] == ["--native"]:
        app_name, args = "native_app", args[1:]
    if len(args) < 4:
        raise SystemExit(__doc__)
    builds, pairs, workload, options = args[0:2], int(args[2]), args[3], args[4:]
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(pairs):
        for name, python in zip(("A", "B"), builds, strict=True):
            report = window(python, app_name, workload, options)
            ticks = report["cpu"]["server_ticks"] * 1e6 / report["cpu"]["clk_tck"]
            per_op = ticks / max(report["ops"], 1)
            cpu[name].append(per_op)
            print(
                f"{name}  {report['ops'] / report['window_s']:9.0f} ops/s"
                f"  {per_op:8.2f} server CPU µs/op  p50 {report['latency_us']['p50']:8.1f} µs"
                f"  stolen {report['cpu']['total']['steal']} ticks",
                flush=True,
            )
    for name, python in zip(("A", "B"), builds, strict=True):
        print(f"{name} ({python}): median {statistics.median(cpu[name]):.2f} server CPU µs/op")


if __name__ == "__main__":
    main()
