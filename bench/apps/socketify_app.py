"""The benchmark's two endpoints on socketify (uWebSockets under Python).

``/chat`` uses uWebSockets' pub/sub: every member subscribes to one topic and each
message is published to it. Usage: python socketify_app.py --host 127.0.0.1 --port 8000
"""

import argparse

from socketify import App, AppListenOptions, CompressOptions, OpCode


def build() -> App:
    app = App()

    def echo(ws, message, opcode):
        ws.send(message, opcode)

    def join(ws):
        ws.subscribe("chat")

    def chat(ws, message, opcode):
        app.publish("chat", message, OpCode.TEXT)

    common = {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 1024 * 1024,
        "idle_timeout": 0,
    }
    app.ws("/echo", {**common, "message": echo})
    app.ws("/chat", {**common, "open": join, "message": chat})
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    arguments = parser.parse_args()
    app = build()
    app.listen(AppListenOptions(port=arguments.port, host=arguments.host), lambda config: None)
    app.run()
