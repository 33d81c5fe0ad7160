"""The listening socket a server is handed instead of binding one (``fd``): systemd's socket
activation, or any parent process that bound the port, passes it as an open descriptor."""

from __future__ import annotations

import os
import socket


def inherited_address(fd: int) -> tuple[str, int]:
    """The address the listening TCP socket at ``fd`` is bound to; ValueError naming the
    setting when ``fd`` is not open or is not a listening TCP socket."""
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
        tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
        if not tcp or listener.type != socket.SOCK_STREAM:
            raise ValueError(f"fd: {fd} is not a TCP socket")
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"fd: {fd} is not listening (bind and listen before passing it)")
        host, port = listener.getsockname()[:2]
    return host, port
