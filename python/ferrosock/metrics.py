"""What a running server can tell a monitoring system: the engine's counters (read from Rust
atomics when asked, never a Python call per event) and every native manager's, as a
dictionary (``app.metrics()``) or in the Prometheus text format (``metrics_path``)."""

from __future__ import annotations

from typing import Any

from . import _engine
from .manager import live_managers

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"

# Engine counters shown as Prometheus counters, with what each one counts.
_ENGINE_COUNTERS = {
    "connections_opened": "WebSocket connections accepted by the engine",
    "connections_closed": "WebSocket connections that ended",
    "messages_received": "data messages received from clients",
    "messages_sent": "data messages queued to clients (each broadcast delivery counts)",
    "bytes_received": "payload bytes of the data messages received",
    "bytes_sent": "payload bytes of the data messages queued to clients",
    "http_requests": "HTTP requests handed to the app",
    "handshakes_accepted": "WebSocket handshakes answered with 101",
}
_MANAGER_COUNTERS = {
    "broadcasts": "broadcasts asked of the manager",
    "delivered": "messages offered to a member's outbox",
    "dropped": "deliveries skipped because a member's outbox was full",
    "closed_slow": "members closed with 1013 as slow consumers (outbox full, or no progress)",
    "published": "messages published to the broadcast backend",
    "received": "messages received from other processes through the backend",
    "publish_dropped": "messages the backend dropped (publish queue full or connection lost)",
    "reconnects": "times the backend connected again after losing Redis",
}
_MANAGER_GAUGES = {
    "members": "members in this process",
    "backlog": "bytes waiting for the manager's fan-out",
    "publish_queue": "bytes waiting to be published to the backend",
}


def collect() -> dict[str, Any]:
    """The engine's counters, ``open_connections``, ``close_codes`` ({code: count}),
    ``handshakes_refused`` ({reason: count}), ``ping_rtt`` (histogram) and ``managers``
    ({name: that manager's ``stats()``})."""
    engine = _engine.metrics()
    engine["open_connections"] = engine["connections_opened"] - engine["connections_closed"]
    managers: dict[str, dict[str, Any]] = {}
    for manager in live_managers():
        label, copies = manager.name, 1
        while label in managers:  # managers without a backend may share a name
            copies += 1
            label = f"{manager.name}#{copies}"
        managers[label] = manager.stats()
    engine["managers"] = managers
    return engine


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        shown = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        return f"ferrosock_{name}{{{shown}}} {value}"
    return f"ferrosock_{name} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(kind: str, name: str, help_text: str) -> list[str]:
    return [f"# HELP ferrosock_{name} {help_text}", f"# TYPE ferrosock_{name} {kind}"]


def prometheus_text(metrics: dict[str, Any]) -> str:
    """``collect()``'s figures in the Prometheus text exposition format."""
    out: list[str] = []
    for key, help_text in _ENGINE_COUNTERS.items():
        out += _family("counter", f"{key}_total", help_text)
        out.append(_line(f"{key}_total", metrics[key]))
    out += _family("gauge", "open_connections", "WebSocket connections open now")
    out.append(_line("open_connections", metrics["open_connections"]))
    out += _family("counter", "handshakes_refused_total", "WebSocket handshakes refused, by reason")
    for reason, count in metrics["handshakes_refused"].items():
        out.append(_line("handshakes_refused_total", count, {"reason": reason}))
    out += _family("counter", "close_codes_total", "connections ended, by close code")
    for code, count in sorted(metrics["close_codes"].items()):
        out.append(_line("close_codes_total", count, {"code": code}))
    out += _rtt_histogram(metrics["ping_rtt"])
    out += _manager_families(metrics["managers"])
    return "\n".join(out) + "\n"


def _rtt_histogram(rtt: dict[str, Any]) -> list[str]:
    name = "ping_rtt_seconds"
    out = _family("histogram", name, "round trip of keepalive pings")
    cumulative = 0
    for bound_us, count in zip(rtt["bounds_us"], rtt["counts"], strict=False):
        cumulative += count
        out.append(_line(f"{name}_bucket", cumulative, {"le": repr(bound_us / 1e6)}))
    total = sum(rtt["counts"])
    out.append(_line(f"{name}_bucket", total, {"le": "+Inf"}))
    out.append(_line(f"{name}_sum", rtt["sum_us"] / 1e6))
    out.append(_line(f"{name}_count", total))
    return out


def _manager_families(managers: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for key, help_text in _MANAGER_COUNTERS.items():
        rows = [(n, s[key]) for n, s in managers.items() if key in s]
        if rows:
            out += _family("counter", f"manager_{key}_total", help_text)
            out += [_line(f"manager_{key}_total", v, {"manager": n}) for n, v in rows]
    for key, help_text in _MANAGER_GAUGES.items():
        rows = [(n, s[key]) for n, s in managers.items() if key in s]
        if rows:
            out += _family("gauge", f"manager_{key}", help_text)
            out += [_line(f"manager_{key}", v, {"manager": n}) for n, v in rows]
    backends = [(n, s["backend_state"]) for n, s in managers.items() if "backend_state" in s]
    if backends:
        out += _family("gauge", "manager_backend_connected", "1 while the backend is connected")
        out += [
            _line("manager_backend_connected", int(state == "connected"), {"manager": n})
            for n, state in backends
        ]
    return out
