"""The benchmark's two endpoints on the ``websockets`` library's own asyncio server.

``/chat`` uses the library's ``broadcast()``, its documented way to fan a message out.
Usage: python websockets_app.py --host 127.0.0.1 --port 8000
"""

import argparse
import asyncio

from websockets.asyncio.server import broadcast, serve

CHAT_MEMBERS = set()


async def handler(websocket):
    path = websocket.request.path
    if path == "/echo":
        async for message in websocket:
            await websocket.send(message)
    elif path == "/chat":
        CHAT_MEMBERS.add(websocket)
        try:
            async for message in websocket:
                broadcast(CHAT_MEMBERS, message)
        finally:
            CHAT_MEMBERS.discard(websocket)
    else:
        await websocket.close(1008, "unknown path")


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, backlog=4096, max_size=2**20) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments.host, arguments.port))
    except ImportError:
        asyncio.run(main(arguments.host, arguments.port))
