"""What a test can read of a server process from /proc: its resident memory and its open
file descriptors."""

from __future__ import annotations

import os


def rss_kib(pid: int) -> int:
    """Resident set size in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
