"""The benchmark's two endpoints on picows (Cython WebSocket frames over asyncio).

Usage: python picows_app.py --host 127.0.0.1 --port 8000
"""

import argparse
import asyncio

from picows import WSListener, WSMsgType, ws_create_server

CHAT_MEMBERS = set()


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_bytes())


class Chat(WSListener):
    def on_ws_connected(self, transport):
        CHAT_MEMBERS.add(transport)

    def on_ws_disconnected(self, transport):
        CHAT_MEMBERS.discard(transport)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT:
            message = frame.get_payload_as_bytes()
            for member in CHAT_MEMBERS:
                member.send(WSMsgType.TEXT, message)


def listener_for(request):
    return {b"/echo": Echo, b"/chat": Chat}.get(request.path, lambda: None)()


async def main(host: str, port: int) -> None:
    server = await ws_create_server(listener_for, host, port, backlog=4096)
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
