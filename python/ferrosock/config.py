"""Server settings: one field here is one keyword of ``run()``, one keyword of ``App(...)``
and one CLI flag (``ws_ping_interval`` ↔ ``--ws-ping-interval``), with the same default."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

MIB = 1 << 20


@dataclass
class Config:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8000, metadata={"help": "port to bind (0: any free port)"})
    fd: int | None = field(
        default=None,
        metadata={
            "help": "serve on this inherited, already bound listening socket (TCP or Unix) "
            "instead of binding host and port (systemd socket activation passes 3)"
        },
    )
    uds: str | None = field(
        default=None,
        metadata={
            "help": "listen on a Unix socket file at this path instead of host and port "
            "(for a proxy on the same machine); a stale socket file there is replaced, "
            "and removed at exit"
        },
    )
    workers: int = field(
        default=1, metadata={"help": "worker processes sharing the port (SO_REUSEPORT)"}
    )
    io_threads: int | None = field(
        default=None,
        metadata={"help": "engine IO threads per process (default: the CPUs it may use)"},
    )
    ws_ping_interval: float | None = field(
        default=20.0, metadata={"help": "seconds between keepalive pings (0 disables)"}
    )
    ws_ping_timeout: float | None = field(
        default=20.0, metadata={"help": "seconds to wait for a pong before closing with 1011"}
    )
    ws_max_size: int = field(
        default=MIB, metadata={"help": "largest incoming message in bytes (bigger: 1009)"}
    )
    max_connections: int | None = field(
        default=None, metadata={"help": "open WebSockets at most; more are refused with 503"}
    )
    allowed_origins: list[str] | None = field(
        default=None,
        metadata={"help": "comma-separated Origin values allowed to connect ('*': any)"},
    )
    outbox_limit: int = field(
        default=MIB,
        metadata={"help": "bytes queued per socket before sends and broadcasts wait for it"},
    )
    inbox_limit: int = field(
        default=256 * 1024,
        metadata={"help": "bytes buffered per socket before reading pauses (TCP pushes back)"},
    )
    ws_max_messages_per_second: float | None = field(
        default=None,
        metadata={
            "help": "messages and control frames a client may send per second (a bucket "
            "holding one second's worth); more close with 1008"
        },
    )
    ws_max_bytes_per_second: int | None = field(
        default=None,
        metadata={
            "help": "payload bytes a client may send per second (a bucket holding one "
            "second's worth); more close with 1008"
        },
    )
    ws_idle_timeout: float | None = field(
        default=None,
        metadata={"help": "seconds with no data message from the client before closing with 1001"},
    )
    http_max_body: int = field(default=MIB, metadata={"help": "largest HTTP request body"})
    handshake_timeout: float = field(
        default=10.0,
        metadata={
            "help": "seconds a new connection has to send its whole request head; then it is closed"
        },
    )
    timeout_keep_alive: float = field(
        default=5.0,
        metadata={"help": "seconds an idle keep-alive HTTP connection waits for its next request"},
    )
    http_max_header_size: int = field(
        default=16 * 1024,
        metadata={"help": "largest request head (request line and headers) in bytes; bigger: 431"},
    )
    http_max_headers: int = field(
        default=100, metadata={"help": "most headers in a request; more: 431"}
    )
    max_connections_per_ip: int | None = field(
        default=None,
        metadata={
            "help": "open WebSockets per client address at most (the forwarded client behind "
            "a trusted proxy); more are refused with 429"
        },
    )
    backlog: int = field(default=2048, metadata={"help": "listen backlog"})
    graceful_shutdown_timeout: float = field(
        default=10.0, metadata={"help": "seconds handlers get to finish at shutdown"}
    )
    close_timeout: float = field(
        default=5.0, metadata={"help": "seconds a closing handshake may take"}
    )
    slow_consumer_timeout: float = field(
        default=5.0,
        metadata={
            "help": "seconds a socket over outbox_limit may go without taking a byte before "
            "it is closed with 1013 (sends and broadcasts wait for it until then)"
        },
    )
    ssl_certfile: str | None = field(
        default=None,
        metadata={"help": "PEM certificate chain: serve wss:// and https:// (with ssl_keyfile)"},
    )
    ssl_keyfile: str | None = field(
        default=None, metadata={"help": "PEM private key of ssl_certfile (PKCS#8, RSA or EC)"}
    )
    ssl_keyfile_password: str | None = field(
        default=None, metadata={"help": "password of an encrypted PKCS#8 ssl_keyfile"}
    )
    ssl_ca_certs: str | None = field(
        default=None,
        metadata={"help": "PEM CA certificates that client certificates must chain to"},
    )
    ssl_cert_reqs: int = field(
        default=0,
        metadata={"help": "client certificates: 0 not asked, 1 optional, 2 required"},
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})
    metrics_path: str | None = field(
        default=None,
        metadata={"help": "HTTP path serving app.metrics() in the Prometheus text format"},
    )
    log_config: str | None = field(
        default=None,
        metadata={"help": "logging configuration file: JSON or YAML (dictConfig) or INI"},
    )
    env_file: str | None = field(
        default=None,
        metadata={"help": "file of KEY=VALUE lines put into the environment before the app loads"},
    )
    reload: bool = field(
        default=False,
        metadata={"help": "restart the server when a watched file changes (needs watchfiles)"},
    )
    reload_dirs: list[str] | None = field(
        default=None,
        metadata={
            "help": "comma-separated directories --reload watches (default: the current one)",
            "flag": "--reload-dir",
        },
    )
    factory: bool = field(
        default=False, metadata={"help": "the app given is a function that returns the app"}
    )
    access_log: bool = field(default=True, metadata={"help": "log each request and accept"})
    proxy_headers: bool = field(
        default=True,
        metadata={
            "help": "take the client and scheme from X-Forwarded-For and X-Forwarded-Proto "
            "when the peer is in forwarded_allow_ips"
        },
    )
    forwarded_allow_ips: str = field(
        default="127.0.0.1",
        metadata={
            "help": "comma-separated addresses or CIDR networks of trusted proxies ('*': any)",
            "env": "FORWARDED_ALLOW_IPS",
        },
    )
    server_header: bool = field(
        default=True, metadata={"help": "send 'server: ferrosock' with every response"}
    )
    date_header: bool = field(
        default=True, metadata={"help": "send a date header with every response"}
    )
    root_path: str = field(
        default="",
        metadata={"help": "path prefix the app is mounted under behind a proxy, e.g. /api"},
    )
    loop: str = field(default="auto", metadata={"help": "auto, asyncio or uvloop"})
    reuse_port: bool = field(
        default=False, metadata={"help": "bind with SO_REUSEPORT (set by --workers)"}
    )
    broadcast_backend: str | None = field(
        default=None,
        metadata={
            "help": "Redis URL (redis://, rediss://) carrying every ConnectionManager's "
            "messages across processes and hosts",
            "env": "FERROSOCK_BROADCAST_BACKEND",
        },
    )
    broadcast_channel_prefix: str = field(
        default="ferrosock", metadata={"help": "prefix of the backend's Redis channels"}
    )
    broadcast_publish_limit: int = field(
        default=8 * MIB,
        metadata={"help": "bytes waiting to be published at most; past it messages are dropped"},
    )
    broadcast_presence_timeout: float = field(
        default=1.0,
        metadata={"help": "seconds cluster_count()/cluster_members() wait for every process"},
    )

    @classmethod
    def from_settings(cls, *layers: dict[str, Any]) -> Config:
        """Build from keyword layers, later ones winning, over the environment variables
        some fields name (``FERROSOCK_BROADCAST_BACKEND``); unknown names are an error."""
        names = {f.name for f in fields(cls)}
        given: dict[str, Any] = {}
        for layer in layers:
            unknown = sorted(set(layer) - names)
            if unknown:
                raise TypeError(
                    f"unknown server setting(s): {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(names))}"
                )
            given.update(layer)
        if given.get("env_file"):
            load_env_file(given["env_file"])
        from_environment = {
            f.name: os.environ[f.metadata["env"]]
            for f in fields(cls)
            if "env" in f.metadata and os.environ.get(f.metadata["env"])
        }
        return cls(**{**from_environment, **given})

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def flag_of(setting: dataclasses.Field[Any]) -> str:
    """The CLI flag of a setting: its name with dashes, or uvicorn's where that differs."""
    return str(setting.metadata.get("flag", "--" + setting.name.replace("_", "-")))


def settings_reference() -> str:
    """``docs/settings.md``, made from the fields above (a test keeps the file in step)."""
    lines = [
        "# Settings",
        "",
        "Each setting is a keyword of `App(...)` and `ferrosock.run(...)` and a flag of",
        "`ferrosock run`; booleans also have a `--no-` flag. Generated from `Config`",
        "(`python/ferrosock/config.py`) by `ferrosock.config.settings_reference()`.",
        "",
        "| setting | flag | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(Config):
        flag = flag_of(f)
        if f.type == "bool":
            flag += f" / --no-{f.name.replace('_', '-')}"
        what = f.metadata.get("help", "")
        if "env" in f.metadata:
            what += f"; also the environment variable `{f.metadata['env']}`"
        default = "none" if f.default is None else f"`{f.default!r}`"
        lines.append(f"| `{f.name}` | `{flag}` | {default} | {what} |")
    return "\n".join(lines) + "\n"


def check_positive(name: str, value: float | None) -> None:
    """A limit that is either off (None) or a positive number; otherwise ValueError naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number or None, not {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite (None for no limit), not {value!r}")


def load_env_file(path: str) -> None:
    """Put a file's ``KEY=VALUE`` lines into ``os.environ`` (``export`` prefixes, ``#``
    comments and quotes allowed); variables already set are kept, as python-dotenv does."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as error:
        raise ValueError(f"env_file: cannot read {path}: {error.strerror}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name.replace("_", "a").isalnum():
            raise ValueError(f"env_file: {path} line {number} is not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        os.environ.setdefault(name, value)
