"""Spans of one engine call (OBS-03): the adapter's client span, the worker's server span.

Used only when `specs.tracing.enabled()`; callers check that once per job and take the
untraced path otherwise, so with tracing off nothing here runs. With it on, a job costs
a handful of spans; the wrappers look at each event's type (no span work per token) to
find the first token and the terminal event.

    orchestrator dispatch ─► engine.generate (CLIENT, here) ──traceparent──►
        worker.generate (SERVER, in `llorch worker`) ─► prefill ─► decode

Token counts and the finish reason use the OpenTelemetry GenAI names
(`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
`gen_ai.response.finish_reasons`), as the orchestrator's `task` span does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from specs import tracing
from worker_adapters.types import End, Failed, Started, StreamEvent, Token

__all__ = ["engine_span", "traced_generation", "traced_stream"]


def engine_span(kind: str, job_id: str, address: str) -> tracing.Span | None:
    """The adapter's client span for one generation, child of the caller's current span
    (the orchestrator's dispatch span); None when tracing is off."""
    if not tracing.enabled():
        return None
    return tracing.start_span(
        "engine.generate",
        kind=tracing.SpanKind.CLIENT,
        attributes={"llorch.engine_kind": kind, "llorch.job_id": job_id, "server.address": address},
    )


async def traced_stream(
    events: AsyncIterator[StreamEvent], span: tracing.Span
) -> AsyncGenerator[StreamEvent, None]:
    """`events`, passed through; `span` ends at the terminal event (consumers stop there
    and may leave this generator to the garbage collector), or when closed before it."""
    ended = False
    try:
        async for event in events:
            if type(event) is End or type(event) is Failed:
                _end(span, event)
                ended = True
            yield event
    finally:
        await _close(events)
        if not ended:
            _end(span, None)


async def traced_generation(
    events: AsyncIterator[StreamEvent], metadata: Iterable[tuple[str, Any]] | None, job_id: str
) -> AsyncGenerator[StreamEvent, None]:
    """The worker's side: a server span whose parent is the caller's `traceparent` (gRPC
    metadata), with children `prefill` (Started to the first token) and `decode`."""
    span = tracing.start_span(
        "worker.generate",
        kind=tracing.SpanKind.SERVER,
        parent=tracing.extract(metadata),
        attributes={"llorch.job_id": job_id},
    )
    inside = tracing.context_with(span)
    prefill: tracing.Span | None = None
    decode: tracing.Span | None = None
    terminal: StreamEvent | None = None
    try:
        async for event in events:
            if decode is None:
                if type(event) is Started:
                    prefill = tracing.start_span("prefill", parent=inside)
                    prefill.set_attribute("gen_ai.usage.input_tokens", event.tokens_in)
                    prefill.set_attribute("llorch.tokens_cached", event.tokens_cached)
                elif type(event) is Token:
                    if prefill is not None:
                        prefill.end()
                    decode = tracing.start_span("decode", parent=inside)
            if type(event) is not Token:
                terminal = event
            yield event
    finally:
        await _close(events)
        for child in (prefill, decode):
            if child is not None and child.is_recording():
                child.end()
        _end(span, terminal)


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _end(span: tracing.Span, terminal: StreamEvent | None) -> None:
    """End `span` with the stream's outcome: an error status carries the code."""
    if isinstance(terminal, Failed):
        span.set_attribute("llorch.error_code", terminal.code)
        span.set_status(tracing.StatusCode.ERROR, terminal.code)
    elif isinstance(terminal, End):
        span.set_attribute("gen_ai.usage.input_tokens", terminal.tokens_in)
        span.set_attribute("gen_ai.usage.output_tokens", terminal.tokens_out)
        span.set_attribute("gen_ai.response.finish_reasons", [terminal.finish_reason])
    else:
        span.set_attribute("llorch.outcome", "closed before a terminal event")
    span.end()
