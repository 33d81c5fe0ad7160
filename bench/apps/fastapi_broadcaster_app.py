"""``/chat`` on FastAPI across processes, the usual way: the ``broadcaster`` package.

Every process runs this app against one Redis (``BROADCAST_URL``, default
``memory://``). Each connection subscribes to one broadcaster channel and forwards what
arrives on it; every text message a client sends is published to the channel, so it
reaches every member on every process, the sender included (through Redis, even on the
sender's own process). This follows the chat example in broadcaster's README.
"""

import asyncio
import contextlib
import os

import anyio
from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket

CHANNEL = "chat"
broadcast = Broadcast(os.environ.get("BROADCAST_URL", "memory://"))
# broadcaster's first subscribers to a channel race: two that both find no subscriber
# both subscribe in Redis, and the second replaces the first one's queue, which then gets
# nothing. One at a time, every member is kept.
subscribing = asyncio.Lock()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    await broadcast.connect()
    try:
        yield
    finally:
        await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.websocket("/chat")
async def chat(websocket: WebSocket):
    await websocket.accept()
    async with contextlib.AsyncExitStack() as stack:
        async with subscribing:
            subscriber = await stack.enter_async_context(broadcast.subscribe(channel=CHANNEL))
        async with anyio.create_task_group() as tasks:

            async def receive():
                async for message in websocket.iter_text():
                    await broadcast.publish(channel=CHANNEL, message=message)
                tasks.cancel_scope.cancel()

            tasks.start_soon(receive)
            async for event in subscriber:
                await websocket.send_text(event.message)
