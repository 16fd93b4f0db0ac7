"""`SseResponse`: a streaming response for Server-Sent Events, lean on the token path.

Starlette's `StreamingResponse` runs each stream in an anyio task group with a second
task listening for the disconnect (uvicorn speaks ASGI 2.3, where `send` on a closed
connection does not fail): cancel scopes and two tasks per stream. This response
streams in the handler's own task and watches for the disconnect from one plain asyncio
task: when the client goes away, the stream is cancelled where it waits (the body
iterator's `finally` runs, as with Starlette) and the response ends quietly.

Chunks are sent as they come: the iterator decides what one chunk holds (the event log
hands over everything that piled up, so one write carries many frames under load and a
lone frame goes out at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["SseResponse"]


class SseResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self, chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        self._chunks = chunks
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        state = {"done": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["done"]:
                state["left"] = True
                streaming.cancel()

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            streaming.uncancel()  # our own cancel, for the disconnect: the stream just ends
        finally:
            state["done"] = True
            watcher.cancel()
            close = getattr(self._chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(RuntimeError):
                    await close()
