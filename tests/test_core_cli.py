"""``ferrosock run`` finds the app the way uvicorn does."""

from core_server import REPO_DIR, TESTS_DIR
from core_support import recv
from websockets.asyncio.client import connect


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
