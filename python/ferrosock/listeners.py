"""The listening socket a server is handed instead of binding host and port: one inherited
as an open descriptor (``fd``: systemd's socket activation, or any parent process that
bound it), or a Unix socket file bound here (``uds``: behind a proxy on the same machine)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

# The mode of a new socket file, as uvicorn makes it: any local user may connect (restrict
# it with the directory's permissions). A file left by an earlier run keeps its mode.
UDS_MODE = 0o666
# sockaddr_un's sun_path holds 108 bytes on Linux, the terminating NUL included.
UDS_PATH_MAX = 107


def inherited_address(fd: int) -> tuple[str, int] | str:
    """Where the listening socket at ``fd`` is bound: (host, port) for TCP, the path for a
    Unix socket; ValueError naming the setting when ``fd`` is not open or is not a
    listening stream socket."""
    try:
        copy = os.dup(fd)
    except OSError as error:
        raise ValueError(f"fd: {fd} is not open ({error.strerror})") from None
    try:
        listener = socket.socket(fileno=copy)
    except OSError as error:
        os.close(copy)
        raise ValueError(f"fd: {fd} is not a socket ({error.strerror})") from None
    with listener:
        known = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
        if listener.family not in known or listener.type != socket.SOCK_STREAM:
            raise ValueError(f"fd: {fd} is not a TCP or Unix stream socket")
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"fd: {fd} is not listening (bind and listen before passing it)")
        if listener.family == socket.AF_UNIX:
            path = listener.getsockname()
            return path if isinstance(path, str) else os.fsdecode(path)
        host, port = listener.getsockname()[:2]
    return str(host), int(port)


def check_unix_path(path: str) -> int | None:
    """That a Unix socket can be bound at ``path``: its directory exists and nothing else
    is there but a socket file nobody listens on (left by a run that died). The mode of
    that stale file, or None when there is none; ValueError naming ``uds`` otherwise."""
    if len(os.fsencode(path)) > UDS_PATH_MAX:
        raise ValueError(f"uds: {path} is longer than a socket path may be ({UDS_PATH_MAX} bytes)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"uds: the directory of {path} does not exist")
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(found.st_mode):
        raise ValueError(f"uds: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return stat.S_IMODE(found.st_mode)
        except OSError as error:
            raise ValueError(f"uds: cannot use {path} ({error.strerror})") from None
    raise ValueError(f"uds: {path} is in use: another server listens on it")


class UnixListener:
    """A listening Unix socket at ``path``, owned from bind to ``close``: a stale socket
    file there is replaced, and ``close`` removes the file unless another server has
    since put its own there."""

    def __init__(self, path: str, backlog: int) -> None:
        mode = check_unix_path(path)
        if mode is not None:
            os.unlink(path)
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.bind(path)
            os.chmod(path, UDS_MODE if mode is None else mode)
            self.socket.listen(backlog)
        except OSError as error:
            self.socket.close()
            raise ValueError(f"uds: cannot listen on {path} ({error.strerror or error})") from None
        self._file = os.stat(path)

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(self.path)
            if (now.st_dev, now.st_ino) == (self._file.st_dev, self._file.st_ino):
                os.unlink(self.path)
