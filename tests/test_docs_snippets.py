"""The code on the documentation pages runs as written.

Each page's fenced blocks are taken in order, in a fresh directory per page:

- ```` ```python file=NAME ```` is written to NAME (an app module, a test file);
- ```` ```python ```` is run as a script there and must exit 0 (its asserts are the check);
- ```` ```sh run ```` runs each command: ``ferrosock run ...`` starts that server (kept
  until the page is done, and waited for until it listens), ``pytest ...`` must pass;
- any other block (``sh`` without ``run``, ``ini``, ``nginx``, ``dockerfile``) is text.

Port 8000 in a snippet is replaced by a free port, so the page's server and its client
snippets meet there. Servers are real ``ferrosock run`` processes and clients real ones.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from core_server import REPO_DIR, ServerProcess

DOCS = REPO_DIR / "docs"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PORT = re.compile(r"\b8000\b")
RUN_TIMEOUT = 60
# Pages whose snippets must exist and run: a page losing its runnable code fails here.
RUNNABLE_PAGES = {"quickstart.md", "porting.md", "testing.md", "deployment.md"}


@dataclass
class Block:
    language: str
    attributes: dict[str, str]
    code: str


def blocks(page: Path) -> list[Block]:
    found = []
    for language, info, code in FENCE.findall(page.read_text(encoding="utf-8")):
        attributes = {}
        for word in info.split():
            name, _, value = word.partition("=")
            attributes[name] = value
        found.append(Block(language, attributes, code))
    return found


def runnable(block: Block) -> bool:
    return block.language == "python" or (block.language == "sh" and "run" in block.attributes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pages_with_code() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.md") if any(map(runnable, blocks(p))))


def test_every_topic_page_has_code_that_runs():
    assert RUNNABLE_PAGES <= set(pages_with_code())


def _run(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"


def _start(command: list[str], cwd: Path) -> ServerProcess:
    """``ferrosock run MODULE:APP --flags`` as the page gives it, from ``cwd``."""
    assert command[:2] == ["ferrosock", "run"], command
    server = ServerProcess(command[2], *command[3:], cwd=cwd)
    # ServerProcess puts --host 127.0.0.1 --port 0 first; the page's own flags come after
    # them and win, with its port 8000 already replaced.
    return server.start()


@pytest.mark.parametrize("name", pages_with_code())
def test_page_snippets_run(name, tmp_path):
    port = str(free_port())
    servers: list[ServerProcess] = []
    try:
        for number, block in enumerate(blocks(DOCS / name), 1):
            code = PORT.sub(port, block.code)
            what = f"{name} block {number}"
            if block.language == "python" and "file" in block.attributes:
                (tmp_path / block.attributes["file"]).write_text(code, encoding="utf-8")
            elif block.language == "python":
                script = tmp_path / f"snippet_{number}.py"
                script.write_text(code, encoding="utf-8")
                _run([sys.executable, str(script)], tmp_path, what)
            elif runnable(block):
                for line in code.splitlines():
                    command = shlex.split(line.removeprefix("$ "), comments=True)
                    if not command:
                        continue
                    if command[0] == "pytest":
                        _run([sys.executable, "-m", *command, "-q"], tmp_path, what)
                    elif command[0] == "ferrosock":
                        servers.append(_start(command, tmp_path))
                    else:
                        pytest.fail(f"{what}: don't know how to run {line!r}")
    finally:
        for server in servers:
            server.stop()
