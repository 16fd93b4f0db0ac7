"""`HttpAdapterBase`: what the HTTP engine adapters share (ADP-01 over HTTP).

A subclass says, per request, which route to call with which body and which
`FrameDecoder` reads the answer (`plan`), or refuses the request up front with a
`Failed`: a parameter its engine kind (`engine_kind`) does not honour per the capability
matrix is refused with UNSUPPORTED_PARAM (`refused`, API-16: never dropped, never run
unconstrained), a malformed one with INVALID_PARAMS. The base turns that into the event
stream through `StreamRunner`, cancels and closes, makes control calls with error
statuses mapped once (`http_errors.control_error`), and discovers the served model name
from `/v1/models` for OpenAI-style routes (vLLM rejects unknown names), caching it.
With tracing on
(OBS-03), each generation is a client span whose W3C `traceparent` header goes to the
engine; subclasses that stream differently override `_submit`, not `submit`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specs import tracing
from worker_adapters._http import HttpClient, HttpSettings
from worker_adapters._relay import FrameDecoder, StreamRunner
from worker_adapters._trace import engine_span, traced_stream
from worker_adapters.capabilities import refusal
from worker_adapters.errors import AdapterError, EngineStatusError, EngineUnavailable
from worker_adapters.http_errors import control_error, failure_from_transport
from worker_adapters.protocol import Endpoint, one_per_batch
from worker_adapters.types import Failed, GenerateRequest, StreamEvent

__all__ = ["HttpAdapterBase", "StreamPlan"]


@dataclass(frozen=True, slots=True)
class StreamPlan:
    path: str
    body: Mapping[str, Any]
    decoder: FrameDecoder
    headers: Mapping[str, str] | None = None


class HttpAdapterBase:
    kind = ""
    engine_kind = ""  # the row of the capability matrix this adapter's engine has

    def __init__(
        self, endpoint: Endpoint, settings: HttpSettings | None = None, *, model: str = ""
    ) -> None:
        self._client = HttpClient(endpoint.address, endpoint.api_key, settings, endpoint.tls)
        self._runner = StreamRunner(self._client)
        self._model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r})"

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        raise NotImplementedError

    def refused(self, request: GenerateRequest) -> Failed | None:
        """UNSUPPORTED_PARAM for a parameter this engine kind does not honour (API-16)."""
        return refusal(self.engine_kind, request)

    def submit(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        span = engine_span(self.kind, request.job_id, self._client.base_url)
        if span is None:  # tracing off: no wrapper on the token path
            return self._submit(request, None)
        return traced_stream(self._submit(request, tracing.inject(span)), span)

    def submit_batches(self, request: GenerateRequest) -> AsyncIterator[Sequence[StreamEvent]]:
        """`submit`, with the events of one engine read handed on together (the
        orchestrator's token path). Falls back to one event per list when tracing is on
        or a subclass streams its own way."""
        if type(self)._submit is not HttpAdapterBase._submit or tracing.enabled():
            return one_per_batch(self.submit(request))
        return self._submit_batches(request, None)

    async def _submit(
        self, request: GenerateRequest, trace_headers: Mapping[str, str] | None
    ) -> AsyncIterator[StreamEvent]:
        """The stream; `trace_headers` (W3C `traceparent`) go on the engine request."""
        async with contextlib.aclosing(self._submit_batches(request, trace_headers)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event
                    if self._runner.cancelled(request.job_id):  # the rest is dropped
                        break

    async def _submit_batches(
        self, request: GenerateRequest, trace_headers: Mapping[str, str] | None
    ) -> AsyncGenerator[Sequence[StreamEvent], None]:
        try:
            plan = await self.plan(request)
        except AdapterError as exc:  # a control call of the plan failed (model, version)
            yield (failure_from_transport(exc, tokens_seen=False),)
            return
        if isinstance(plan, Failed):
            yield (plan,)
            return
        headers = plan.headers
        if trace_headers:
            headers = {**(headers or {}), **trace_headers}
        batches = self._runner.run_batches(
            request.job_id, plan.path, plan.body, plan.decoder, headers
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def cancel(self, job_id: str) -> None:
        await self._runner.cancel(job_id)

    async def close(self) -> None:
        """Ends this adapter's open streams; the shared connection pool stays open."""
        self._runner.abort_all()

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        """OpenAI `/v1/embeddings` (vLLM, llama_cpp.server); overridden where it differs."""
        body = {"model": await self.served_model(), "input": list(inputs)}
        reply = await self.json("POST", "/v1/embeddings", body)
        rows = sorted(reply.get("data") or (), key=lambda row: int(row.get("index", 0)))
        return tuple(tuple(float(x) for x in row["embedding"]) for row in rows)

    # -- helpers for subclasses ----------------------------------------------------------

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        """A control call's JSON; error statuses raise the mapped adapter error."""
        reply = await self._client.call(method, path, body)
        try:
            return reply.json_or_raise()
        except EngineStatusError as exc:
            raise control_error(exc) from exc

    async def served_model(self) -> str:
        """The model name OpenAI routes need: given, or the first of `/v1/models`."""
        if not self._model:
            listing = await self.json("GET", "/v1/models")
            models: Sequence[Any] = listing.get("data") or () if isinstance(listing, dict) else ()
            if not models:
                raise EngineUnavailable("engine lists no model on /v1/models")
            self._model = str(models[0].get("id", ""))
        return self._model
