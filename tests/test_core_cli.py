"""``ferrosock run`` finds the app the way uvicorn does, and its flags read as uvicorn's."""

import subprocess
import sys
from dataclasses import fields
from importlib.metadata import version

from core_server import REPO_DIR, TESTS_DIR
from core_support import recv
from websockets.asyncio.client import connect

from ferrosock.cli import build_parser
from ferrosock.config import Config, flag_of


async def test_app_dir_makes_the_module_importable(start_server):
    server = start_server("core:app", "--app-dir", str(TESTS_DIR / "apps"), cwd=REPO_DIR)
    async with connect(server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send("found")
        assert await recv(websocket) == "found"


async def test_current_directory_is_importable(start_server):
    server = start_server("examples.echo:app", cwd=REPO_DIR)
    async with connect(server.ws_url("/echo"), open_timeout=10) as websocket:
        await websocket.send("found")
        assert await recv(websocket) == "found"


def test_every_boolean_setting_has_a_no_form_and_help_says_each_default_once():
    parser = build_parser()
    args = vars(parser.parse_args(["run", "m:app", "--no-access-log"]))
    assert args["access_log"] is False
    assert vars(parser.parse_args(["run", "m:app", "--access-log"]))["access_log"] is True
    run_parser = parser._subparsers._group_actions[0].choices["run"]
    help_text = " ".join(run_parser.format_help().split())
    for field in fields(Config):
        flag = flag_of(field)
        assert flag in help_text, flag
        if field.type == "bool":
            assert "--no-" + flag[2:] in help_text
    for action in run_parser._actions:
        assert (action.help or "").count("default") <= 1, action.dest


def _cli(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "ferrosock", *args], capture_output=True, text=True, timeout=30
    )


def test_an_unknown_flag_is_a_one_line_error_naming_it():
    result = _cli("run", "examples.echo:app", "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ferrosock: error: unrecognized arguments: --no-such-flag"
    ]


def test_version_prints_the_package_version():
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ferrosock {version('ferrosock')}"


def test_the_settings_reference_is_in_step_with_config():
    from ferrosock.config import settings_reference

    path = REPO_DIR / "docs" / "settings.md"
    assert path.read_text() == settings_reference(), (
        "docs/settings.md is stale: regenerate it with "
        "python -c \"from ferrosock.config import settings_reference as s; print(s(), end='')\""
        " > docs/settings.md"
    )
