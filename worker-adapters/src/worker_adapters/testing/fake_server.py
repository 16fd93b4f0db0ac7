"""`FakeEngine`: the base of the fake engine servers (fakes, for tests only).

An aiohttp web app on 127.0.0.1, port 0, that answers generation routes by replaying
transcripts and records what it was asked. It knows nothing of the engine it imitates;
subclasses (`fake_engines`) add that engine's routes, auth rules and control answers.

- `script(job_id, *transcripts)`: what the next requests of that job get (matched by
  the `X-Llorch-Job` header the adapters send; a job asked more often than scripted,
  a retry, gets the last transcript again); `default` answers everything else.
- `seen(job_id)`: the `SeenRequest` log of the last request of a job: path, JSON body,
  headers, and two events, `finished` (transcript replayed to its end) and
  `disconnected` (the client went away first: how every engine notices a cancel).
- `arrival(job_id)`: an event set when a request of that job arrives.
- `active`: streams being answered now (what the fakes report as busy slots).

The server cancels a handler when its client disconnects (`handler_cancellation`), as
the real engines stop a generation; `stop()` ends hanging streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from worker_adapters._relay import JOB_HEADER
from worker_adapters.testing.transcripts import PING, Transcript

__all__ = ["FakeEngine", "SeenRequest", "json_response"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class SeenRequest:
    job_id: str
    path: str
    body: Any
    headers: Mapping[str, str]  # case-insensitive, as HTTP header names are
    peer: str = ""  # the client's address: the same peer twice means a reused connection
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body), content_type="application/json")


class FakeEngine:
    """Base fake; see the module docstring. Use `async with` or `start()`/`stop()`."""

    engine = "fake"

    def __init__(self, *, api_key: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context`: serve HTTPS with it (a certificate for 127.0.0.1)."""
        self.api_key = api_key
        self._ssl_context = ssl_context
        self.default: Transcript | None = None
        self.requests: list[SeenRequest] = []
        self.active = 0
        self.url = ""
        self._scripts: dict[str, list[Transcript]] = {}
        self._last: dict[str, SeenRequest] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._auth_middleware])

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (default: loopback, a port the kernel picks); the URL
        names 127.0.0.1 when `host` is the wildcard (a fake in a container)."""
        self._runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self._ssl_context is not None else "http"
        self.url = f"{scheme}://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1]

    # -- scripting and inspection --------------------------------------------------------

    def script(self, job_id: str, *transcripts: Transcript) -> None:
        self._scripts[job_id] = list(transcripts)

    def seen(self, job_id: str) -> SeenRequest:
        return self._last[job_id]

    def arrival(self, job_id: str) -> asyncio.Event:
        return self._arrivals.setdefault(job_id, asyncio.Event())

    def requests_of(self, job_id: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.job_id == job_id]

    # -- for subclasses --------------------------------------------------------------------

    def route_stream(self, path: str) -> None:
        """Answer POST `path` from the transcripts."""
        self.app.router.add_post(path, self._replay_handler)

    def gate(self, request: web.Request) -> web.StreamResponse | None:
        """An answer given before auth and routing (e.g. 503 while loading), or None."""
        return None

    def is_public(self, request: web.Request) -> bool:
        """Paths this engine serves without its API key."""
        return False

    def unauthorized(self) -> web.Response:
        return json_response({"error": "Unauthorized"}, 401)

    # -- internals -------------------------------------------------------------------------

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        gated = self.gate(request)
        if gated is not None:
            return gated
        presented = request.headers.get("Authorization", "")
        if self.api_key and not self.is_public(request) and presented != f"Bearer {self.api_key}":
            return self.unauthorized()
        return await handler(request)

    def _next_transcript(self, job_id: str) -> Transcript | None:
        queue = self._scripts.get(job_id)
        if not queue:
            return self.default
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def _replay_handler(self, request: web.Request) -> web.StreamResponse:
        job_id = request.headers.get(JOB_HEADER, "")
        body = await request.json() if request.can_read_body else None
        peer = str(request.transport.get_extra_info("peername")) if request.transport else ""
        seen = SeenRequest(job_id, request.path, body, request.headers.copy(), peer)
        self.requests.append(seen)
        self._last[job_id] = seen
        self.arrival(job_id).set()
        transcript = self._next_transcript(job_id)
        if transcript is None:
            return json_response({"error": {"message": "no transcript", "type": "fake"}}, 500)
        self.active += 1
        try:
            return await self._replay(request, transcript, seen)
        except (asyncio.CancelledError, ConnectionError):
            seen.disconnected.set()
            raise
        finally:
            self.active -= 1

    async def _replay(
        self, request: web.Request, transcript: Transcript, seen: SeenRequest
    ) -> web.StreamResponse:
        if transcript.hold_s:
            await asyncio.sleep(transcript.hold_s)  # the fake engine's prefill time
        response = web.StreamResponse(status=transcript.status)
        response.content_type = transcript.content_type
        await response.prepare(request)
        for index, write in enumerate(transcript.writes):
            if index and transcript.pace_s:
                await asyncio.sleep(transcript.pace_s)  # the fake engine's decode time
            await response.write(write)
        if transcript.ending in ("hang", "ping"):
            await self._silence(response, ping=transcript.ending == "ping")
        if transcript.ending == "reset" and request.transport is not None:
            request.transport.abort()
            seen.finished.set()
            return response
        await response.write_eof()
        seen.finished.set()
        return response

    async def _silence(self, response: web.StreamResponse, *, ping: bool) -> None:
        """Hold the stream open until the client leaves or the fake stops."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.05 if ping else None)
            if ping and not self._stopping.is_set():
                await response.write(PING)
