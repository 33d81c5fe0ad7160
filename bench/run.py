#!/usr/bin/env python3
"""Runs the WebSocket benchmark: every server against every workload, one at a time.

Each server runs pinned to CPU 0 (``taskset -c 0``), the Rust load generator to CPU 1;
servers listen on 127.0.0.1 only and are started and stopped by PID. For each workload
the load generator reads /proc at the edges of its measured window, and this script
turns that into throughput, latency, server CPU per operation (the robust figure on a
shared machine), the other processes' CPU use (to flag noisy results) and ratios
against FastAPI on uvicorn. Results go to bench/results/<date>.json and .md.

    python bench/run.py                 # everything (about 10 minutes)
    python bench/run.py --quick         # ferrosock only, ~1 s per workload; CI's smoke test
    python bench/run.py --setup         # create bench/.venv with the peers and ferrosock
    python bench/run.py --only fastapi-uvicorn,reference --workloads echo-100,idle-1000

The cross-process workload (broadcast-cluster-1000) runs two server processes sharing a
redis-server that this script starts on a free loopback port (all three on CPU 0); it is
skipped, with a note, where redis-server is not installed.

Exit status: 0 when every ferrosock run served correctly (counts and order checked),
1 when one did not (or ferrosock could not be started), 2 on a usage or build error.
Peers that fail are recorded in the results but do not fail the run.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS = BENCH / "apps"
VENV = BENCH / ".venv"
TARGET = BENCH / "target"
LOADGEN = TARGET / "release" / "loadgen"
REFERENCE = TARGET / "release" / "reference"
LOGS = TARGET / "logs"
HOST = "127.0.0.1"
SERVER_CPU = 0
LOADGEN_CPU = 1
BASELINE = "fastapi-uvicorn"

# A window is flagged noisy when other processes used more than this share of one core
# (percent), or the hypervisor stole more than this from us.
NOISY_OTHERS_PCT = 10.0
NOISY_STEAL_PCT = 5.0
# ... or the server's CPU, measured just before and after the window, ran this much slower
# than at its best in the run (neighbours on the host that no /proc counter shows).
NOISY_SLOWER_SPIN_PCT = 12.0
NOISY_SLOWER_CHASE_PCT = None  # recorded only: it varies too widely on a shared host
# The load generator is near saturation: throughput may be the client's limit.
LOADGEN_BOUND_PCT = 90.0
# Client connections per idle load-generator process (each stays far below 20 000 files).
IDLE_CONNS_PER_PROCESS = 6000


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    kind: str  # echo | broadcast | handshake | idle
    args: tuple[str, ...] = ()
    conns: int = 0  # idle only
    processes: int = 1  # server processes; more than one share a broker (Redis)
    baseline: str = BASELINE  # the server the ratios are against
    compare: str | None = None  # the in-process workload a cross-process one is set against

    @property
    def timed(self) -> bool:
        return self.kind != "idle"


WORKLOADS = [
    Workload("echo-1", "echo, 1 connection, 64 B", "echo", ("--conns", "1", "--size", "64")),
    Workload("echo-100", "echo, 100 connections, 64 B", "echo", ("--conns", "100", "--size", "64")),
    Workload(
        "echo-16k", "echo, 20 connections, 16 KiB", "echo", ("--conns", "20", "--size", "16384")
    ),
    Workload(
        "echo-inflight",
        "echo, 100 connections x 16 in flight, 64 B",
        "echo",
        ("--conns", "100", "--size", "64", "--inflight", "16"),
    ),
    Workload(
        "broadcast-100",
        "broadcast to 100 subscribers, 64 B",
        "broadcast",
        ("--conns", "100", "--window", "8"),
    ),
    Workload(
        "broadcast-1000",
        "broadcast to 1000 subscribers, 64 B",
        "broadcast",
        ("--conns", "1000", "--window", "8"),
    ),
    Workload(
        "broadcast-cluster-1000",
        "broadcast to 1000 subscribers on 2 processes sharing Redis, 64 B",
        "broadcast",
        ("--conns", "1000", "--window", "8"),
        processes=2,
        baseline="fastapi-broadcaster",
        compare="broadcast-1000",
    ),
    Workload(
        "handshake",
        "handshakes (open, close), 8 at a time",
        "handshake",
        ("--concurrency", "8", "--sources", "127.0.0.2-127.0.0.9"),
    ),
    Workload("idle-1000", "idle connections: 1 000", "idle", conns=1000),
    Workload("idle-5000", "idle connections: 5 000", "idle", conns=5000),
    Workload("idle-18000", "idle connections: 18 000", "idle", conns=18000),
]
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}
QUICK_WORKLOADS = [
    "echo-100",
    "echo-inflight",
    "broadcast-100",
    "broadcast-cluster-1000",
    "handshake",
    "idle-1000",
]

UNITS = {"echo": "message", "broadcast": "delivery", "handshake": "handshake", "idle": "connection"}


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    title: str
    python: str | None  # interpreter the server runs under (None: a native binary)
    argv: list[str]  # {python}, {host}, {port} are filled in
    modules: tuple[str, ...] = ()  # must import for the server to be available
    workloads: tuple[str, ...] | None = None  # None: every workload
    is_ferrosock: bool = False
    unavailable: str | None = None
    # The environment variable that gives the server the shared broker's URL; None: its
    # processes cannot share one, so it runs no cross-process workload.
    broker_env: str | None = None

    def command(self, port: int) -> list[str]:
        fill = {"python": self.python or "", "host": HOST, "port": str(port), "apps": str(APPS)}
        return [part.format(**fill) for part in self.argv]

    def runs(self, workload: Workload) -> bool:
        chosen = self.workloads is None or workload.name in self.workloads
        return chosen and (workload.processes == 1 or self.broker_env is not None)


# The broker that cross-process workloads share: persistence off, loopback only.
BROKER = Server(
    "redis",
    "Redis",
    None,
    ["redis-server", "--bind", "{host}", "--port", "{port}", "--save", "", "--appendonly", "no"],
)


def imports(python: str, modules: tuple[str, ...]) -> str | None:
    """None when `python` can import every module, else the error's last line."""
    if not Path(python).exists():
        return f"{python} does not exist"
    statement = "; ".join(f"import {m}" for m in modules) or "pass"
    result = subprocess.run([python, "-c", statement], capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def find_ferrosock_python(explicit: str | None) -> tuple[str | None, str]:
    """The interpreter to run ferrosock under, and where it was found (or why not)."""
    candidates = [explicit] if explicit else []
    candidates += [
        os.environ.get("FERROSOCK_PYTHON"),
        str(VENV / "bin" / "python"),
        str(REPO / ".venv" / "bin" / "python"),
        sys.executable,
    ]
    problems = []
    for python in filter(None, candidates):
        problem = imports(python, ("ferrosock.server",))
        if problem is None:
            return python, python
        problems.append(f"{python}: {problem}")
        if explicit:
            break
    return None, "; ".join(problems)


# Where uvicorn and ferrosock listen, logging warnings only.
LISTEN_QUIETLY = ("--host", "{host}", "--port", "{port}", "--log-level", "warning")


def peer_servers(peer_python: str) -> list[Server]:
    def uvicorn(app: str) -> list[str]:
        return [
            "{python}",
            "-m",
            "uvicorn",
            app,
            *LISTEN_QUIETLY,
            "--no-access-log",
            "--backlog",
            "4096",
        ]

    granian = [
        "{python}",
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
        "fastapi_app:app",
    ]
    return [
        Server(
            BASELINE,
            "FastAPI + uvicorn",
            peer_python,
            uvicorn("fastapi_app:app"),
            ("fastapi", "uvicorn", "uvloop"),
        ),
        Server(
            "fastapi-granian", "FastAPI + Granian", peer_python, granian, ("fastapi", "granian")
        ),
        Server(
            "websockets",
            "websockets (own server)",
            peer_python,
            ["{python}", "websockets_app.py", "--host", "{host}", "--port", "{port}"],
            ("websockets",),
        ),
        Server(
            "picows",
            "picows",
            peer_python,
            ["{python}", "picows_app.py", "--host", "{host}", "--port", "{port}"],
            ("picows",),
        ),
        Server(
            "socketify",
            "socketify",
            peer_python,
            ["{python}", "socketify_app.py", "--host", "{host}", "--port", "{port}"],
            ("socketify",),
        ),
        Server(
            "fastapi-broadcaster",
            "FastAPI + uvicorn + broadcaster",
            peer_python,
            uvicorn("fastapi_broadcaster_app:app"),
            ("fastapi", "uvicorn", "uvloop", "broadcaster", "redis"),
            workloads=("broadcast-cluster-1000",),
            broker_env="BROADCAST_URL",
        ),
    ]


def ferrosock_servers(python: str | None, why_not: str, build: str = "") -> list[Server]:
    """ferrosock under `python`; with `build` (e.g. "before"), named apart so that two
    builds can be measured in one run."""

    def run(app: str) -> list[str]:
        return [
            "{python}",
            "-m",
            "ferrosock",
            "run",
            f"ferrosock_app:{app}",
            "--app-dir",
            "{apps}",
            *LISTEN_QUIETLY,
            "--backlog",
            "4096",
        ]

    suffix, note = (f"-{build}", f", {build}") if build else ("", "")
    servers = [
        Server(
            f"ferrosock{suffix}",
            f"ferrosock (docs' Python manager{note})",
            python,
            run("app"),
            is_ferrosock=True,
        ),
        Server(
            f"ferrosock-native{suffix}",
            f"ferrosock (native manager{note})",
            python,
            run("native_app"),
            workloads=("broadcast-100", "broadcast-1000", "broadcast-cluster-1000"),
            is_ferrosock=True,
            broker_env="FERROSOCK_BROADCAST_BACKEND",
        ),
    ]
    if python is None:
        for server in servers:
            server.unavailable = f"ferrosock is not importable ({why_not})"
    return servers


def reference_server() -> Server:
    return Server(
        "reference",
        "pure Rust (tokio-tungstenite)",
        None,
        [str(REFERENCE), "--host", "{host}", "--port", "{port}"],
    )


# --------------------------------------------------------------------------- /proc


def process_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        ppid = int(text[text.rfind(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, at = [root], 0
    while at < len(tree):
        tree.extend(parents.get(tree[at], []))
        at += 1
    return tree


def tree_rss_bytes(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def raise_open_file_limit() -> None:
    """In the child before exec: soft RLIMIT_NOFILE up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The CPUs this script may use, read before it pins itself.
ALLOWED_CPUS = os.sched_getaffinity(0)


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c cpu`, where that CPU exists and taskset is installed."""
    if cpu in ALLOWED_CPUS and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *argv]
    return argv


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Running:
    """A started server process: its PID, port and log."""

    def __init__(self, server: Server, label: str, broker_url: str | None = None):
        self.server = server
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{server.name}-{label}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1")
        env.pop("PYTHONHOME", None)
        if server.broker_env:
            env.pop(server.broker_env, None)
            if broker_url:
                env[server.broker_env] = broker_url
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, server.command(self.port)),
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_open_file_limit,
            start_new_session=True,
        )
        self.pid = self.process.pid  # taskset execs the server: same PID

    def wait_ready(self, timeout: float = 60.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"exited with status {self.process.returncode}: {self.log_tail()}"
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    time.sleep(0.3)  # let multi-process servers finish starting workers
                    return None
            except OSError:
                time.sleep(0.05)
        return f"not listening after {timeout:.0f} s: {self.log_tail()}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 6) -> str:
        self.log.flush()
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        tree = process_tree(self.pid) if self.alive() else []
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
        for pid in tree:  # whatever of this server's own tree outlived the signal
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class Deployment:
    """What one workload runs against: one server process, or `workload.processes` of
    them sharing a redis-server started first (all on the server's CPU)."""

    def __init__(self, server: Server, workload: Workload, label: str):
        self.processes = workload.processes
        self.broker: Running | None = None
        self.servers: list[Running] = []
        self.problem: str | None = None
        if self.processes > 1:
            self.broker = Running(BROKER, label)
            self.problem = self.broker.wait_ready(timeout=20)
            if self.problem:
                self.problem = f"redis-server {self.problem}"
                return
        url = f"redis://{HOST}:{self.broker.port}/0" if self.broker else None
        for index in range(self.processes):
            name = f"{label}-{index + 1}" if self.processes > 1 else label
            self.servers.append(Running(server, name, url))
        for running in self.servers:
            self.problem = running.wait_ready()
            if self.problem:
                return

    def fits(self, workload: Workload) -> bool:
        return self.processes == workload.processes and self.alive()

    def everyone(self) -> list[Running]:
        """The server processes, then the broker."""
        return [*self.servers, *([self.broker] if self.broker else [])]

    def alive(self) -> bool:
        return all(running.alive() for running in self.everyone())

    def log_tail(self) -> str:
        """The last lines of whichever processes died."""
        dead = [r for r in self.everyone() if not r.alive()]
        return " / ".join(f"{r.log_path.name}: {r.log_tail()}" for r in dead)

    def loadgen_args(self) -> list[str]:
        """Where the load generator connects, and whose CPU it reads."""
        args = ["--port", ",".join(str(r.port) for r in self.servers)]
        args += ["--server-pid", ",".join(str(r.pid) for r in self.servers)]
        if self.broker:
            args += ["--broker-pid", str(self.broker.pid)]
        return args

    def stop(self) -> None:
        for running in self.everyone():
            running.stop()


def calibrate() -> dict:
    """How fast the server's CPU is right now (`loadgen calibrate`, ~0.2 s)."""
    done = subprocess.run(
        pinned(SERVER_CPU, [str(LOADGEN), "calibrate"]), capture_output=True, text=True, timeout=30
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


class CpuSpeed:
    """The fastest calibration seen so far in this run: the yardstick for slow windows."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}

    def around(self, before: dict, after: dict) -> dict:
        """The slower of two readings, remembering the fastest of each."""
        worst = {}
        for key in ("spin_ns", "chase_ns"):
            values = [r[key] for r in (before, after) if key in r]
            if values:
                worst[key] = max(values)
                self.best[key] = min([*values, self.best.get(key, math.inf)])
        return worst

    def slower_pct(self, speed: dict) -> dict:
        return {
            key: round(100.0 * (speed[key] / self.best[key] - 1.0), 1)
            for key in speed
            if self.best.get(key)
        }

    def flags(self, speed: dict) -> list[str]:
        slower = self.slower_pct(speed)
        flags = []
        if slower.get("spin_ns", 0.0) > NOISY_SLOWER_SPIN_PCT:
            flags.append(
                f"noisy: CPU {SERVER_CPU} ran {slower['spin_ns']:.0f}% slower than its best"
            )
        if (
            NOISY_SLOWER_CHASE_PCT is not None
            and slower.get("chase_ns", 0.0) > NOISY_SLOWER_CHASE_PCT
        ):
            flags.append(f"noisy: memory {slower['chase_ns']:.0f}% slower than its best")
        return flags


def run_loadgen(workload: Workload, target: Deployment, warmup: float, duration: float) -> dict:
    argv = [
        str(LOADGEN),
        workload.kind,
        *workload.args,
        "--host",
        HOST,
        *target.loadgen_args(),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
    ]
    try:
        done = subprocess.run(
            pinned(LOADGEN_CPU, argv),
            capture_output=True,
            text=True,
            timeout=warmup + duration + 120,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "errors": ["load generator timed out"]}
    return parse_loadgen_output(done.stdout, done.stderr, done.returncode)


def parse_loadgen_output(stdout: str, stderr: str, status: int) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            report = json.loads(line)
            if status not in (0, 1):
                report["ok"] = False
                report.setdefault("errors", []).append(f"load generator exit status {status}")
            return report
    return {
        "ok": False,
        "errors": [f"load generator exit status {status}: {stderr.strip()[-500:]}"],
    }


# --------------------------------------------------------------------------- measuring


def derive(report: dict, workload: Workload) -> dict:
    """Throughput, latency and CPU figures from one load-generator report."""
    result: dict = {
        "ok": bool(report.get("ok")),
        "errors": report.get("errors", []),
        "unit": UNITS[workload.kind],
    }
    cpu = report.get("cpu")
    window = report.get("window_s") or 0.0
    ops = report.get("ops") or 0
    if not cpu or window <= 0:
        return result
    hz = cpu["clk_tck"]
    total = cpu["total"]
    server_s = cpu["server_ticks"] / hz
    loadgen_s = cpu["loadgen_us"] / 1e6
    # Other processes' time, by summing every process's utime+stime (the load
    # generator does it at the window's edges); and the same from /proc/stat's
    # totals, an upper bound that also holds the kernel's softirq time.
    stat_ticks = sum(total[k] for k in ("user", "nice", "system", "irq", "softirq"))
    stat_others = max(0, stat_ticks - cpu["server_ticks"] - cpu["loadgen_ticks"])
    others_ticks = cpu.get("others_ticks", stat_others)

    def pct(seconds: float) -> float:  # a share of one core over the window
        return round(100.0 * seconds / window, 1)

    result.update(
        ops=ops,
        window_s=window,
        throughput=ops / window,
        latency_p50_us=report["latency_us"]["p50"],
        latency_p99_us=report["latency_us"]["p99"],
        server_cpu_us_per_op=(server_s * 1e6 / ops) if ops else None,
        server_cpu_pct=pct(server_s),
        loadgen_cpu_pct=pct(loadgen_s),
        others_cpu_pct=pct(others_ticks / hz),
        others_stat_pct=pct(stat_others / hz),
        softirq_pct=pct(total["softirq"] / hz),
        steal_pct=pct(total["steal"] / hz),
        server_processes=cpu["server_processes"],
        sent=report.get("sent"),
        received=report.get("received"),
    )
    flags = []
    if result["others_cpu_pct"] > NOISY_OTHERS_PCT:
        flags.append(f"noisy: other processes used {result['others_cpu_pct']:.0f}% of a core")
    if result["steal_pct"] > NOISY_STEAL_PCT:
        flags.append(f"noisy: {result['steal_pct']:.0f}% stolen by the hypervisor")
    if result["loadgen_cpu_pct"] > LOADGEN_BOUND_PCT:
        flags.append("client-bound: the load generator was near 100%")
    result["noisy"] = any(flag.startswith("noisy") for flag in flags)
    result["flags"] = flags
    if workload.processes > 1:
        result.update(cross_process_figures(report, window, ops))
    return result


def cross_process_figures(report: dict, window: float, ops: int) -> dict:
    """The broker's own CPU (not in the server's figure), and the latency at the members
    on the other processes than the sender's, whose messages went through the broker."""
    cpu = report["cpu"]
    broker_s = cpu.get("broker_ticks", 0) / cpu["clk_tck"]
    far = report.get("latency_far_us") or {}
    return {
        "broker_cpu_us_per_op": (broker_s * 1e6 / ops) if ops else None,
        "broker_cpu_pct": round(100.0 * broker_s / window, 1),
        "latency_far_p50_us": far.get("p50"),
        "latency_far_p99_us": far.get("p99"),
        "latency_far_count": far.get("count"),
    }


@dataclass
class Plan:
    warmup: float
    duration: float
    retries: int
    deadline: float  # time.monotonic() after which nothing new is started
    speed: CpuSpeed = field(default_factory=CpuSpeed)

    def spent(self, margin: float = 0.0) -> bool:
        return time.monotonic() + margin > self.deadline


SKIPPED = {"ok": False, "skipped": True, "errors": ["not run: the time budget was spent"]}
# Rounds whose CPU per operation differ by more than this factor are pointed out.
UNSTABLE_RATIO = 1.3


def keep_better(kept: dict | None, new: dict) -> dict:
    """Of two rounds of one workload: a failure stays visible; otherwise the quiet one,
    then the one with the lower CPU per operation (noise only ever adds)."""
    if kept is None or kept.get("skipped"):
        return new
    if new.get("skipped") or not kept.get("ok"):
        return kept
    if not new.get("ok"):
        return new

    def rank(result: dict) -> tuple[bool, float]:
        return bool(result.get("noisy")), result.get("server_cpu_us_per_op") or math.inf

    return min(kept, new, key=rank)


def measure_timed(server: Server, workloads: list[Workload], plan: Plan, say) -> dict:
    results: dict[str, dict] = {}
    running: Deployment | None = None
    try:
        for workload in workloads:
            if plan.spent():
                results[workload.name] = dict(SKIPPED)
                continue
            if running is None or not running.fits(workload):
                if running is not None:
                    running.stop()
                running = Deployment(server, workload, "timed")
                if running.problem:
                    problem = running.problem
                    # A server that cannot start will not start for the next workload either.
                    say(f"  server did not start: {problem}")
                    for rest in workloads[workloads.index(workload) :]:
                        results[rest.name] = {
                            "ok": False,
                            "errors": [f"server did not start: {problem}"],
                        }
                    running.stop()
                    running = None
                    break
            result = None
            for attempt in range(1 + plan.retries):
                before = calibrate()
                report = run_loadgen(workload, running, plan.warmup, plan.duration)
                speed = plan.speed.around(before, calibrate())
                candidate = derive(report, workload)
                candidate["cpu_speed"] = speed
                slow = plan.speed.flags(speed)
                if slow and "flags" in candidate:
                    candidate["flags"] += slow
                    candidate["noisy"] = True
                candidate["attempts"] = attempt + 1
                if result is None or (
                    candidate.get("ok")
                    and candidate.get("others_cpu_pct", 1e9) < result.get("others_cpu_pct", 1e9)
                ):
                    result = candidate
                # A noisy window is measured again; the quietest attempt is kept.
                again = candidate.get("ok") and candidate.get("noisy") and running.alive()
                if not again or plan.spent(margin=120):
                    break
            if not running.alive():
                result["ok"] = False
                result["errors"].append(f"server died: {running.log_tail()}")
            results[workload.name] = result
            say("  " + describe(workload, result))
    finally:
        if running is not None:
            running.stop()
    return results


def measure_idle(server: Server, workload: Workload, say) -> dict:
    deployment = Deployment(server, workload, workload.name)
    try:
        if deployment.problem:
            say(f"  server did not start: {deployment.problem}")
            return {"ok": False, "errors": [f"server did not start: {deployment.problem}"]}
        running = deployment.servers[0]
        # Warm the server up with a few connections, then take the baseline.
        warm = run_loadgen(
            Workload("warm", "", "echo", ("--conns", "20")), deployment, warmup=0.0, duration=0.3
        )
        time.sleep(0.5)
        baseline = tree_rss_bytes(running.pid)
        processes = max(1, math.ceil(workload.conns / IDLE_CONNS_PER_PROCESS))
        share = [
            workload.conns // processes + (i < workload.conns % processes) for i in range(processes)
        ]
        clients = []
        started = time.monotonic()
        for i, conns in enumerate(share):
            first, last = 10 + 8 * i, 17 + 8 * i  # 8 source addresses per client process
            argv = [
                str(LOADGEN),
                "idle",
                "--host",
                HOST,
                "--port",
                str(running.port),
                "--conns",
                str(conns),
                "--server-pid",
                str(running.pid),
                "--hold",
                "180",
                "--sources",
                f"127.0.0.{first}-127.0.0.{last}",
            ]
            clients.append(
                subprocess.Popen(
                    pinned(LOADGEN_CPU, argv),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=raise_open_file_limit,
                )
            )
        established = 0
        for client in clients:
            line = client.stdout.readline()  # "READY n", or EOF if it failed to open
            if line.startswith("READY"):
                established += int(line.split()[1])
        open_s = time.monotonic() - started
        time.sleep(1.0)
        loaded = tree_rss_bytes(running.pid)
        reports = []
        for client in clients:
            client.stdin.close()  # tells every client to close its connections
        for client in clients:
            out = client.stdout.read()  # ends when the client exits (its drain is bounded)
            err = client.stderr.read()
            client.wait()
            reports.append(parse_loadgen_output(out, err, client.returncode))
        errors = [e for r in reports for e in r.get("errors", [])]
        if not warm.get("ok"):
            errors = warm.get("errors", []) + errors
        if not running.alive():
            errors.append(f"server died: {running.log_tail()}")
        ok = not errors and established == workload.conns
        if established != workload.conns:
            errors.append(f"only {established} of {workload.conns} connections were established")
        result = {
            "ok": ok,
            "errors": errors[:20],
            "unit": "connection",
            "connections": established,
            "rss_baseline_bytes": baseline,
            "rss_loaded_bytes": loaded,
            "rss_per_connection_bytes": (loaded - baseline) / established if established else None,
            "open_s": round(open_s, 2),
            "opened_per_s": established / open_s if open_s > 0 else None,
            "client_processes": processes,
            "closed_clean": sum(r.get("closed_clean", 0) for r in reports),
            "flags": [],
            "noisy": False,
        }
        say("  " + describe(workload, result))
        return result
    finally:
        deployment.stop()


def describe(workload: Workload, result: dict) -> str:
    state = "ok " if result.get("ok") else "FAIL"
    if workload.kind == "idle":
        per = result.get("rss_per_connection_bytes")
        text = f"{workload.name:15} {state} {result.get('connections', 0)} conns, " + (
            f"{per / 1024:.1f} KiB/conn" if per is not None else "no figure"
        )
    elif "throughput" in result:
        cpu = result.get("server_cpu_us_per_op")
        text = (
            f"{workload.name:15} {state} {result['throughput']:>10.0f} {result['unit']}/s"
            f"  p50 {result['latency_p50_us']:>8.0f} us  p99 {result['latency_p99_us']:>8.0f} us"
            f"  server {fmt_us(cpu):>6} us/op ({result['server_cpu_pct']:.0f}% cpu)"
            f"  loadgen {result['loadgen_cpu_pct']:.0f}%  others {result['others_cpu_pct']:.0f}%"
        )
        if "broker_cpu_pct" in result:
            text += (
                f"  redis {fmt_us(result['broker_cpu_us_per_op'])} us/op"
                f" ({result['broker_cpu_pct']:.0f}% cpu)"
                f"  far p50 {fmt_us(result['latency_far_p50_us'])}"
                f" p99 {fmt_us(result['latency_far_p99_us'])} us"
            )
    else:
        text = f"{workload.name:15} {state}"
    if not result.get("ok"):
        text += "  " + "; ".join(result.get("errors", [])[:3])
    if result.get("flags"):
        text += "  [" + "; ".join(result["flags"]) + "]"
    return text


def final_flags(attempts: list[dict], speed: CpuSpeed) -> None:
    """Flags timed windows against the whole run's best CPU speed."""
    for result in attempts:
        if "cpu_speed" in result:
            result["flags"] = [
                f
                for f in result.get("flags", [])
                if not f.startswith(("noisy: CPU", "noisy: memory"))
            ]
            result["flags"] += speed.flags(result["cpu_speed"])
            result["cpu_slower_pct"] = speed.slower_pct(result["cpu_speed"])
            result["noisy"] = any(f.startswith("noisy") for f in result["flags"])


ROUND_FIELDS = ("ok", "server_cpu_us_per_op", "throughput", "latency_p50_us", "latency_p99_us")
ROUND_FIELDS += ("others_cpu_pct", "cpu_slower_pct", "flags")


def choose_round(attempts: list[dict]) -> dict:
    """One workload's rounds, reduced to the one kept, with every round's main figures."""
    chosen = None
    for attempt in attempts:
        chosen = keep_better(chosen, attempt)
    chosen = dict(chosen)
    if len(attempts) > 1:
        chosen["rounds"] = [{k: a.get(k) for k in ROUND_FIELDS} for a in attempts]
        figures = [a["server_cpu_us_per_op"] for a in attempts if a.get("server_cpu_us_per_op")]
        if len(figures) > 1 and max(figures) > UNSTABLE_RATIO * min(figures):
            spread = 100.0 * (max(figures) / min(figures) - 1.0)
            chosen["flags"] = [*chosen.get("flags", []), f"rounds differ by {spread:.0f}%"]
    return chosen


def baseline_of(workload_name: str) -> str:
    """The server a workload's ratios are against (uvicorn, with broadcaster across
    processes)."""
    workload = WORKLOADS_BY_NAME.get(workload_name)
    return workload.baseline if workload else BASELINE


def add_ratios(results: dict) -> None:
    """Each server against the workload's baseline (FastAPI+uvicorn): how many times the
    throughput, how many times less CPU per operation, how many times less memory per
    idle connection."""
    for server_results in results.values():
        for name, result in server_results.items():
            base = results.get(baseline_of(name), {}).get(name)
            if not base or not base.get("ok") or not result.get("ok"):
                continue
            if result.get("throughput") and base.get("throughput"):
                result["throughput_vs_baseline"] = result["throughput"] / base["throughput"]
            if result.get("server_cpu_us_per_op") and base.get("server_cpu_us_per_op"):
                result["cpu_vs_baseline"] = (
                    base["server_cpu_us_per_op"] / result["server_cpu_us_per_op"]
                )
            if result.get("rss_per_connection_bytes") and base.get("rss_per_connection_bytes"):
                result["memory_vs_baseline"] = (
                    base["rss_per_connection_bytes"] / result["rss_per_connection_bytes"]
                )


# --------------------------------------------------------------------------- reports


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "—"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def fmt_us(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_kib(value: float | None) -> str:
    return "—" if value is None else f"{value / 1024:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def summary_cell(result: dict | None, value: str, ratio: float | None) -> str:
    if result is None:
        return "—"
    if not result.get("ok"):
        return "skipped" if result.get("skipped") else "failed"
    if ratio is not None:
        value += f" ({fmt_ratio(ratio)})"
    return value + (" ⚠" if result.get("noisy") else "")


def errors_text(result: dict) -> str:
    return "; ".join(result.get("errors", []))[:200].replace("|", "/")


def detail_row(title: str, r: dict) -> list[str]:
    if not r.get("ok") or "throughput" not in r:
        state = "skipped" if r.get("skipped") else "failed"
        return [title, state, "", "", "", "", "", "", "", errors_text(r)]
    return [
        title,
        fmt_rate(r["throughput"]),
        f"{r['latency_p50_us']:.0f}",
        f"{r['latency_p99_us']:.0f}",
        fmt_us(r["server_cpu_us_per_op"]),
        fmt_ratio(r.get("cpu_vs_baseline")),
        f"{r['server_cpu_pct']:.0f}",
        f"{r['loadgen_cpu_pct']:.0f}",
        f"{r['others_cpu_pct']:.0f}",
        "; ".join(r.get("flags", [])),
    ]


def idle_row(title: str, conns: int, r: dict) -> list[str]:
    if not r.get("ok"):
        return [title, f"{conns}: failed", "", "", "", errors_text(r)]
    return [
        title,
        str(r["connections"]),
        f"{r['rss_baseline_bytes'] / 2**20:.1f} MiB",
        f"{r['rss_loaded_bytes'] / 2**20:.1f} MiB",
        f"{r['rss_per_connection_bytes'] / 1024:.1f}",
        fmt_rate(r.get("opened_per_s")),
    ]


DETAIL_HEADER = [
    "server",
    "ops/s",
    "p50 µs",
    "p99 µs",
    "server µs/op",
    "CPU vs uvicorn",
    "server CPU %",
    "loadgen CPU %",
    "others CPU %",
    "notes",
]
CROSS_HEADER = [
    "server",
    "deliveries/s",
    "server µs/delivery (all processes)",
    "Redis µs/delivery",
    "Redis CPU %",
    "p50 µs",
    "p99 µs",
    "far p50 µs",
    "far p99 µs",
]
COMPARE_HEADER = [
    "server",
    "CPU per delivery vs in-process",
    "CPU per delivery vs in-process, Redis included",
    "far p99 − in-process p99 (ms)",
]


def cross_process_lines(workload: Workload, ran: list[dict], results: dict) -> list[str]:
    """A cross-process workload's own figures (Redis's CPU, the far members' latency),
    and each server against its in-process run of `workload.compare`."""
    rows, compared = [], []
    for s in ran:
        r = results[s["name"]].get(workload.name)
        if not r or not r.get("ok") or "throughput" not in r:
            continue
        rows.append(
            [
                s["title"],
                fmt_rate(r["throughput"]),
                fmt_us(r["server_cpu_us_per_op"]),
                fmt_us(r.get("broker_cpu_us_per_op")),
                f"{r.get('broker_cpu_pct', 0):.1f}",
                f"{r['latency_p50_us']:.0f}",
                f"{r['latency_p99_us']:.0f}",
                fmt_us(r.get("latency_far_p50_us")),
                fmt_us(r.get("latency_far_p99_us")),
            ]
        )
        alone = results[s["name"]].get(workload.compare or "")
        if alone and alone.get("ok") and alone.get("server_cpu_us_per_op"):
            cpu, redis = r["server_cpu_us_per_op"], r.get("broker_cpu_us_per_op") or 0.0
            far_p99 = r.get("latency_far_p99_us")
            compared.append(
                [
                    s["title"],
                    f"{cpu / alone['server_cpu_us_per_op']:.2f}×",
                    f"{(cpu + redis) / alone['server_cpu_us_per_op']:.2f}×",
                    "—"
                    if far_p99 is None
                    else f"{(far_p99 - alone['latency_p99_us']) / 1000:+.2f}",
                ]
            )
    if not rows:
        return []
    lines = [
        f"## Across processes: {workload.name}",
        "",
        f"{workload.processes} server processes and the redis-server they share, all on "
        f"CPU {SERVER_CPU}; the sender is connected to the first process and the members are "
        "split evenly. Server CPU is the sum of the server processes; Redis's is not in it "
        'and is shown apart. "far" is the latency at the members on the other process.',
        "",
        *table(CROSS_HEADER, rows),
    ]
    if compared:
        lines += [
            f"Against the same server's in-process `{workload.compare}` in this run:",
            "",
            *table(COMPARE_HEADER, compared),
        ]
    return lines


IDLE_HEADER = [
    "server",
    "connections",
    "RSS before",
    "RSS with connections",
    "KiB per connection",
    "opened per s",
]


def markdown(document: dict) -> str:
    servers = document["servers"]
    results = document["results"]
    ran = [s for s in servers if results.get(s["name"])]
    workloads = [w for w in WORKLOADS if any(w.name in results[s["name"]] for s in ran)]
    timed = [w for w in workloads if w.timed]
    idle = [w for w in workloads if not w.timed]
    where, settings = document["machine"], document["settings"]
    lines = [
        f"# WebSocket benchmark, {document['started']}",
        "",
        f"{where['cpu']}, {where['cpus']} CPUs, Linux {where['kernel']}; servers pinned to "
        f"CPU {SERVER_CPU}, load generator to CPU {LOADGEN_CPU}; {settings['warmup_s']} s "
        f"warm-up, {settings['duration_s']} s measured per workload"
        + (" (quick mode)" if settings["quick"] else "")
        + ".",
        "",
    ]

    def summary(heading: str, names: list[Workload], figure, ratio_key: str) -> list[str]:
        rows = []
        for s in ran:
            if not any(w.name in results[s["name"]] for w in names):
                continue
            row = [s["title"]]
            for w in names:
                r = results[s["name"]].get(w.name)
                ratio = r.get(ratio_key) if r and s["name"] != baseline_of(w.name) else None
                row.append(summary_cell(r, figure(r) if r else "", ratio))
            rows.append(row)
        return [heading, "", *table(["server", *(w.name for w in names)], rows)]

    if timed:
        lines += summary(
            "## Server CPU per operation (µs; lower is better; × = times less than uvicorn)",
            timed,
            lambda r: fmt_us(r.get("server_cpu_us_per_op")),
            "cpu_vs_baseline",
        )
        lines += summary(
            "## Throughput (operations per second; × = times FastAPI + uvicorn)",
            timed,
            lambda r: fmt_rate(r.get("throughput")),
            "throughput_vs_baseline",
        )
    if idle:
        lines += summary(
            "## Memory per idle connection (KiB of server RSS; × = times less than uvicorn)",
            idle,
            lambda r: fmt_kib(r.get("rss_per_connection_bytes")),
            "memory_vs_baseline",
        )

    for w in (w for w in timed if w.processes > 1):
        lines += cross_process_lines(w, ran, results)
    lines += ["## Details", ""]
    for w in timed:
        rows = [
            detail_row(s["title"], results[s["name"]][w.name])
            for s in ran
            if w.name in results[s["name"]]
        ]
        lines += [f"### {w.name}: {w.title} (per {UNITS[w.kind]})", "", *table(DETAIL_HEADER, rows)]
    if idle:
        rows = [
            idle_row(s["title"], w.conns, results[s["name"]][w.name])
            for w in idle
            for s in ran
            if w.name in results[s["name"]]
        ]
        lines += [
            "### Idle connections (each handler parked in `receive_text`)",
            "",
            *table(IDLE_HEADER, rows),
        ]
    not_run = [f"- {s['title']}: {s['unavailable']}" for s in servers if s.get("unavailable")]
    not_run += [f"- {n}: {why}" for n, why in settings.get("skipped_workloads", {}).items()]
    if not_run:
        lines += ["## Not run", "", *not_run, ""]
    versions = ", ".join(f"{k} {v}" for k, v in document["versions"].items())
    lines += [
        f"⚠ = noisy window: other processes used more than {NOISY_OTHERS_PCT:.0f}% of a core, "
        f"or more than {NOISY_STEAL_PCT:.0f}% was stolen by the hypervisor.",
        "",
        f"Versions: {versions}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- setup


def setup(log) -> int:
    """Creates bench/.venv with the peers and installs ferrosock from this repository."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=False)
    if subprocess.run([*pip, "-r", str(BENCH / "requirements.txt")]).returncode != 0:
        log("installing bench/requirements.txt failed")
        return 2
    for line in (BENCH / "requirements-optional.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement and subprocess.run([*pip, requirement]).returncode != 0:
            log(f"optional peer {requirement} did not install; it will be skipped")
    log(f"installing ferrosock from {REPO} (builds the wheel)")
    # Its own cargo target directory, so the build never waits on another one's lock.
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET / "wheel"))
    if subprocess.run([*pip, str(REPO)], env=env).returncode != 0:
        log("installing ferrosock failed")
        return 2
    return 0


def build(quick: bool, log) -> bool:
    cargo = shutil.which("cargo")
    if cargo is None:
        log("cargo is not installed")
        return LOADGEN.exists() and (quick or REFERENCE.exists())
    argv = [
        cargo,
        "build",
        "--release",
        "--quiet",
        "--manifest-path",
        str(BENCH / "Cargo.toml"),
        "--target-dir",
        str(TARGET),
    ]
    if quick:
        argv += ["-p", "ferrosock-bench-loadgen"]
    return subprocess.run(argv).returncode == 0


def versions(peer_python: str, ferrosock_python: str | None) -> dict:
    found = {"python": platform.python_version()}
    if Path(peer_python).exists():
        found["python"] = subprocess.run(
            [peer_python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        frozen = subprocess.run(
            [peer_python, "-m", "pip", "freeze"], capture_output=True, text=True
        ).stdout
        wanted = {
            "fastapi",
            "starlette",
            "uvicorn",
            "granian",
            "websockets",
            "uvloop",
            "picows",
            "socketify",
            "broadcaster",
            "redis",
        }
        for line in frozen.splitlines():
            name, _, version = line.partition("==")
            if name.lower() in wanted:
                found[name.lower()] = version
    if ferrosock_python:
        found["ferrosock"] = (
            subprocess.run(
                [
                    ferrosock_python,
                    "-c",
                    "import importlib.metadata as m; print(m.version('ferrosock'))",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or "?"
        )
    if shutil.which("redis-server"):
        banner = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        found["redis-server"] = next(
            (w[2:] for w in banner.stdout.split() if w.startswith("v=")), "?"
        )
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if commit.returncode == 0:
        found["commit"] = commit.stdout.strip()
    return found


def machine() -> dict:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def output_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    candidate, n = stem, 1
    while (directory / f"{candidate}.json").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return directory / f"{candidate}.json", directory / f"{candidate}.md"


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="ferrosock only, about a second per workload"
    )
    parser.add_argument(
        "--setup", action="store_true", help="create bench/.venv (peers + ferrosock) and exit"
    )
    parser.add_argument("--only", help="comma-separated servers (see --list)")
    parser.add_argument("--workloads", help="comma-separated workloads (see --list)")
    parser.add_argument("--list", action="store_true", help="list servers and workloads")
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up per workload (default 1, quick 0.3)"
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per workload (default 3, quick 1)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=780,
        help="start no new workload after this many seconds (default 780)",
    )
    parser.add_argument(
        "--ferrosock-python", help="interpreter that imports ferrosock (default: found)"
    )
    parser.add_argument(
        "--baseline-python",
        help="also run the ferrosock this interpreter imports, as ferrosock-before "
        "(a build to compare with in the same run)",
    )
    parser.add_argument(
        "--peer-python", default=str(VENV / "bin" / "python"), help="interpreter with the peers"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default bench/results; quick: bench/target/quick-results)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="times each timed workload is run, keeping the lowest CPU (default 2, quick 1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        help="measure a noisy window again up to N times (default 0)",
    )
    parser.add_argument(
        "--render", type=Path, help="rewrite the .md beside a results .json, and exit"
    )
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    options = parser.parse_args()

    def log(message: str) -> None:
        print(message, flush=True)

    if options.setup:
        return setup(log)
    if options.render:
        document = json.loads(options.render.read_text())
        add_ratios(document["results"])
        options.render.with_suffix(".md").write_text(markdown(document))
        return 0

    ferrosock_python, where = find_ferrosock_python(options.ferrosock_python)
    servers = ferrosock_servers(ferrosock_python, where)
    if options.baseline_python:
        before, why = find_ferrosock_python(options.baseline_python)
        servers += ferrosock_servers(before, why, build="before")
    if not options.quick:
        # The baseline first, then ferrosock and the limit, then the other peers: if the
        # time budget runs out, what goes unmeasured is the least needed.
        baseline, *peers = peer_servers(options.peer_python)
        servers = [baseline, *servers, reference_server(), *peers]
    if options.list:
        for s in servers:
            log(f"server   {s.name:18} {s.title}")
        for w in WORKLOADS:
            log(f"workload {w.name:18} {w.title}")
        return 0
    if options.only:
        wanted = set(options.only.split(","))
        unknown = wanted - {s.name for s in servers}
        if unknown:
            log(f"unknown servers: {', '.join(sorted(unknown))} (see --list)")
            return 2
        servers = [s for s in servers if s.name in wanted]
    names = (
        options.workloads.split(",")
        if options.workloads
        else (QUICK_WORKLOADS if options.quick else [w.name for w in WORKLOADS])
    )
    unknown = [n for n in names if n not in WORKLOADS_BY_NAME]
    if unknown:
        log(f"unknown workloads: {', '.join(unknown)} (see --list)")
        return 2
    selected = [w for w in WORKLOADS if w.name in names]
    # Cross-process workloads need a redis-server to share: skipped, with a note, without.
    no_broker = [] if shutil.which("redis-server") else [w for w in selected if w.processes > 1]
    skipped_workloads = {w.name: "redis-server is not installed" for w in no_broker}
    selected = [w for w in selected if w not in no_broker]
    warmup = options.warmup if options.warmup is not None else (0.3 if options.quick else 1.0)
    duration = options.duration if options.duration is not None else (1.0 if options.quick else 3.0)
    retries = options.retries if options.retries is not None else 0
    rounds = options.rounds if options.rounds is not None else (1 if options.quick else 2)

    if not options.no_build and not build(options.quick, log):
        log("building the load generator failed")
        return 2
    if not LOADGEN.exists():
        log(f"{LOADGEN} is missing; run without --no-build")
        return 2
    if not {SERVER_CPU, LOADGEN_CPU} <= ALLOWED_CPUS:
        log(f"warning: CPUs {SERVER_CPU} and {LOADGEN_CPU} are not both available; not pinning")
    else:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # keep this script off the server's CPU

    for s in servers:
        if s.unavailable:
            continue
        if s.python is None:
            if not Path(s.argv[0]).exists():
                s.unavailable = f"{s.argv[0]} is not built"
        else:
            problem = imports(s.python, s.modules)
            if problem:
                s.unavailable = f"cannot import {', '.join(s.modules)}: {problem}"

    started = _dt.datetime.now()
    clock = time.monotonic()
    plan = Plan(warmup, duration, retries, deadline=clock + options.budget)
    results: dict[str, dict] = {}
    rounds_of: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    failed_ferrosock = []
    for s in servers:
        if s.unavailable:
            log(f"{s.title}: skipped ({s.unavailable})")
            if s.is_ferrosock:
                failed_ferrosock.append(f"{s.name}: {s.unavailable}")
    runnable = [s for s in servers if not s.unavailable]
    for name, why in skipped_workloads.items():
        log(f"{name}: skipped ({why})")
        for s in (s for s in runnable if s.runs(WORKLOADS_BY_NAME[name])):
            results.setdefault(s.name, {})[name] = {
                "ok": False,
                "skipped": True,
                "errors": [f"not run: {why}"],
            }
    # Rounds go through every server in turn, so that a slow spell of the host lands on
    # one round of each server rather than on all of one server's figures.
    for round_index in range(rounds):
        for s in runnable:
            mine = [w for w in selected if s.runs(w)]
            timed = [w for w in mine if w.timed]
            if not mine or (round_index > 0 and not timed):
                continue
            if plan.spent():
                if round_index == 0:
                    s.unavailable = f"not run: the {options.budget:.0f} s budget was spent"
                    log(f"{s.title}: {s.unavailable}")
                continue
            label = f" (round {round_index + 1} of {rounds})" if rounds > 1 else ""
            log(f"{s.title}{label}  [{' '.join(s.command(0)[:4])} ...]")
            server_results = results.setdefault(s.name, {})
            for name, result in measure_timed(s, timed, plan, log).items():
                rounds_of[s.name, name].append(result)
            if round_index > 0:
                continue
            for w in (w for w in mine if not w.timed):
                if plan.spent():
                    server_results[w.name] = dict(SKIPPED)
                    continue
                server_results[w.name] = result = measure_idle(s, w, log)
                if any(e.startswith("server did not start") for e in result.get("errors", [])):
                    for rest in (r for r in mine if not r.timed and r.name not in server_results):
                        server_results[rest.name] = dict(result)
    # Every round is flagged against the whole run's best CPU speed, then one is kept.
    for (server_name, workload_name), attempts in rounds_of.items():
        final_flags(attempts, plan.speed)
        results[server_name][workload_name] = choose_round(attempts)
    for s in runnable:
        if s.is_ferrosock:
            failed_ferrosock += [
                f"{s.name} {n}"
                for n, r in results.get(s.name, {}).items()
                if not r.get("ok") and not r.get("skipped")
            ]
    add_ratios(results)

    document = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - clock, 1),
        "machine": machine(),
        "settings": {
            "quick": options.quick,
            "warmup_s": warmup,
            "duration_s": duration,
            "noisy_retries": retries,
            "rounds": rounds,
            "server_cpu": SERVER_CPU,
            "loadgen_cpu": LOADGEN_CPU,
            "noisy_others_pct": NOISY_OTHERS_PCT,
            "noisy_steal_pct": NOISY_STEAL_PCT,
            "noisy_slower_spin_pct": NOISY_SLOWER_SPIN_PCT,
            "noisy_slower_chase_pct": NOISY_SLOWER_CHASE_PCT,
            "best_cpu_speed": plan.speed.best,
            "ferrosock_python": ferrosock_python,
            "skipped_workloads": skipped_workloads,
        },
        "versions": versions(options.peer_python, ferrosock_python),
        "workloads": {
            w.name: {
                "title": w.title,
                "kind": w.kind,
                "args": list(w.args),
                "conns": w.conns,
                "processes": w.processes,
            }
            for w in selected
        },
        "servers": [
            {
                "name": s.name,
                "title": s.title,
                "command": s.command(0),
                "unavailable": s.unavailable,
            }
            for s in servers
        ],
        "results": results,
    }
    directory = options.out or (TARGET / "quick-results" if options.quick else BENCH / "results")
    json_path, md_path = output_paths(directory, started.strftime("%Y-%m-%d"))
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    md_path.write_text(markdown(document))
    log(f"results: {json_path} and {md_path.name} ({document['elapsed_s']:.0f} s)")
    if failed_ferrosock:
        log("ferrosock failed to serve: " + "; ".join(failed_ferrosock))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
