"""`StreamRunner`: one engine stream relayed as domain events, shared by the HTTP adapters.

The runner owns what every HTTP engine stream has in common; a per-engine
`FrameDecoder` owns what differs (the JSON of each SSE `data` payload):

- open the stream through `_http` (retried only before the first byte);
- read network chunks under the stall deadline (reset by `Started` and by each `Token`,
  never by keep-alive pings), split them into SSE payloads (`_sse`), and hand each
  payload to the decoder, which returns the events it means (`Started`, `Token`s, and a
  terminal `End` or `Failed` once it has seen the engine's real terminal marker or an
  error frame);
- hand the events of one read on together (`run_batches`), as soon as the read
  returned: a consumer pays its per-event overheads (generator hops, wake-ups, writes)
  once per read, not once per token, and nothing is held back to fill a batch;
- end every stream with exactly one terminal: EOF without the decoder's terminal is
  `WORKER_RESET` (ADP-03), transport failures are mapped by `http_errors`;
- stamp `End` with the times measured here (ttft from the request, decode from the
  first token);
- cancel (ADP-04): `cancel(job_id)` marks the job and closes its connection, also while
  the request is still waiting for its status line (llama-server sends headers only
  after the first result). The engine sees the disconnect and stops; the stream yields
  no token after the cancel and ends with `Failed("CANCELLED")`. Idempotent; unknown
  ids are ignored.

After a clean terminal the connection is drained to EOF and returned to the pool;
after anything else it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

from worker_adapters._http import HttpClient, HttpStream
from worker_adapters._sse import SseParser, SseTooLarge
from worker_adapters.errors import AdapterError
from worker_adapters.http_errors import failure_from_transport, truncated
from worker_adapters.types import End, Failed, StreamEvent, Token

__all__ = ["JOB_HEADER", "FrameDecoder", "StreamRunner", "cancelled"]

# Every stream request names its job in this header (engines ignore it; fakes and
# packet captures use it). Not `X-Request-Id`: llama_cpp.server (starlette-context)
# answers 400 when that header is not a UUID.
JOB_HEADER = "X-Llorch-Job"


class FrameDecoder(Protocol):
    """Per-stream: the events meant by one SSE data payload, terminal last."""

    def feed(self, data: bytes) -> Sequence[StreamEvent]: ...


FeedAll = Callable[[Sequence[bytes], list[StreamEvent]], End | Failed | None]


def feed_all_of(decoder: FrameDecoder) -> FeedAll:
    """`feed_all(payloads, out)`: the events of a read's payloads appended to `out`, up to
    a terminal, which is returned (None without one). A decoder may bring its own (the
    OpenAI decoder reads plain token frames inline); else each payload is fed in turn."""
    own: FeedAll | None = getattr(decoder, "feed_all", None)
    if own is not None:
        return own
    feed = decoder.feed

    def feed_all(payloads: Sequence[bytes], out: list[StreamEvent]) -> End | Failed | None:
        for data in payloads:
            for event in feed(data):
                if isinstance(event, End | Failed):
                    return event
                out.append(event)
        return None

    return feed_all


def cancelled(*, tokens_seen: bool) -> Failed:
    return Failed("CANCELLED", "generation cancelled", False, not tokens_seen)


class _Job:
    __slots__ = ("cancelled", "stream")

    def __init__(self, stream: HttpStream) -> None:
        self.cancelled = False
        self.stream = stream  # not open yet: `abort` also stops a request being answered

    def stopped(self) -> bool:
        """`cancelled`, read through a call: it may change while the relay is suspended."""
        return self.cancelled

    def abort(self) -> None:
        self.stream.abort()


class StreamRunner:
    """Streams of one engine endpoint, with their cancel handles."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._jobs: dict[str, _Job] = {}

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def cancelled(self, job_id: str) -> bool:
        """True once `cancel(job_id)` ran for a job still streaming."""
        job = self._jobs.get(job_id)
        return job is not None and job.cancelled

    async def cancel(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.cancelled:
            return
        job.cancelled = True
        job.abort()

    def abort_all(self) -> None:
        """Close every open stream (adapter shutdown); each ends with CANCELLED."""
        for job in self._jobs.values():
            job.cancelled = True
            job.abort()

    async def run(
        self,
        job_id: str,
        path: str,
        body: Mapping[str, Any],
        decoder: FrameDecoder,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """The stream's events one by one (`run_batches`, flattened)."""
        async with contextlib.aclosing(
            self.run_batches(job_id, path, body, decoder, headers)
        ) as batches:
            async for batch in batches:
                for event in batch:
                    yield event
                    if self.cancelled(job_id):  # the rest of the batch is dropped
                        break

    async def run_batches(
        self,
        job_id: str,
        path: str,
        body: Mapping[str, Any],
        decoder: FrameDecoder,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[Sequence[StreamEvent], None]:
        """The stream's events, a list per network read: the events one read completed,
        yielded as soon as that read returned (never held for more). The terminal event
        comes alone, in the last list."""
        job = _Job(self._client.stream())
        self._jobs[job_id] = job
        sent_at = time.perf_counter()
        try:
            headers = {JOB_HEADER: job_id, **(headers or {})}
            stream = await self._open(job, path, body, headers)
            if isinstance(stream, Failed):
                yield (stream,)
                return
            async for batch in self._relay(job, stream, decoder, sent_at):
                yield batch
        finally:
            job.stream.abort()  # no-op after a clean finish
            if self._jobs.get(job_id) is job:
                del self._jobs[job_id]

    async def _open(
        self, job: _Job, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> HttpStream | Failed:
        try:
            stream = await self._client.open_stream(
                path, body, headers=headers, should_stop=job.stopped, stream=job.stream
            )
        except AdapterError as exc:
            if job.cancelled:
                return cancelled(tokens_seen=False)
            return failure_from_transport(exc, tokens_seen=False)
        if job.cancelled:
            return cancelled(tokens_seen=False)
        return stream

    async def _relay(
        self, job: _Job, stream: HttpStream, decoder: FrameDecoder, sent_at: float
    ) -> AsyncGenerator[Sequence[StreamEvent], None]:
        """Events of an open stream, a list per read; `sent_at` (perf_counter) is when
        the request left."""
        loop = asyncio.get_running_loop()
        stall_s = self._client.settings.stall_timeout_s
        first_token_at = 0.0
        deadline = loop.time() + stall_s
        parser = SseParser()
        feed_all = feed_all_of(decoder)
        terminal: End | Failed | None = None
        while terminal is None:
            try:
                chunk = await stream.read(deadline)
                payloads = parser.feed(chunk) if chunk else None
            except (AdapterError, SseTooLarge) as exc:
                terminal = self._broken(job, exc, first_token_at > 0)
                break
            if job.cancelled:
                terminal = cancelled(tokens_seen=first_token_at > 0)
                break
            if payloads is None:
                terminal = truncated(
                    tokens_seen=first_token_at > 0, detail="cut-off event" if parser.pending else ""
                )
                break
            batch: list[StreamEvent] = []
            terminal = feed_all(payloads, batch)  # the events before a terminal go out first
            if not batch:
                continue
            if not first_token_at and any(type(event) is Token for event in batch):
                first_token_at = time.perf_counter()
            deadline = loop.time() + stall_s  # a Started or a Token: the engine is alive
            yield batch
            if job.stopped():  # cancel() ran while the consumer had the batch
                terminal = cancelled(tokens_seen=first_token_at > 0)
        if isinstance(terminal, End):
            await stream.finish()
            terminal = _timed(terminal, sent_at, first_token_at)
        else:
            stream.abort()
        yield (terminal,)

    def _broken(self, job: _Job, exc: Exception, tokens_seen: bool) -> Failed:
        if job.cancelled:
            return cancelled(tokens_seen=tokens_seen)
        if isinstance(exc, SseTooLarge):
            return Failed("ENGINE_ERROR", str(exc), True, not tokens_seen)
        assert isinstance(exc, AdapterError)
        return failure_from_transport(exc, tokens_seen=tokens_seen)


def _timed(end: End, sent_at: float, first_token_at: float) -> End:
    done = time.perf_counter()
    ttft_ms = ((first_token_at or done) - sent_at) * 1000.0
    decode_ms = (done - first_token_at) * 1000.0 if first_token_at else 0.0
    return dataclasses.replace(end, ttft_ms=ttft_ms, decode_time_ms=decode_ms)
