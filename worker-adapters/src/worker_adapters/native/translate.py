"""Worker wire messages (specs.worker.v1) <-> domain types, for both ends of the link.

The only module that builds or reads worker protobuf messages; the server
(`worker_adapters.worker`) and the client (`native.adapter`) both go through it.
"""

from __future__ import annotations

from collections.abc import Iterable

from specs.worker.v1 import worker_pb2 as pb

from worker_adapters.types import (
    ChatTurn,
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
    TokenLogprob,
    ToolCall,
    TopLogprob,
)

__all__ = [
    "event_from_wire",
    "event_to_wire",
    "health_from_wire",
    "health_to_wire",
    "props_from_wire",
    "props_to_wire",
    "request_from_wire",
    "request_to_wire",
]

_OPTIONAL_SAMPLING = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "grammar",
    "json_schema",
    "logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
)


def request_to_wire(request: GenerateRequest) -> pb.GenerateRequest:
    sampling = request.sampling
    wire_sampling = pb.Sampling(max_tokens=sampling.max_tokens, stop=list(sampling.stop))
    for name in _OPTIONAL_SAMPLING:
        value = getattr(sampling, name)
        if value is not None:
            setattr(wire_sampling, name, value)
    wire = pb.GenerateRequest(job_id=request.job_id, sampling=wire_sampling)
    if request.messages is not None:
        wire.chat.messages.extend(_message_to_wire(m) for m in request.messages)
    else:
        wire.prompt = request.prompt or ""
    return wire


def request_from_wire(wire: pb.GenerateRequest) -> GenerateRequest:
    source = wire.sampling
    optional = {
        name: getattr(source, name)
        for name in _OPTIONAL_SAMPLING
        if source.HasField(name)  # type: ignore[arg-type]
    }
    sampling = Sampling(max_tokens=source.max_tokens, stop=tuple(source.stop), **optional)
    if wire.WhichOneof("input") == "chat":
        turns = tuple(_message_from_wire(m) for m in wire.chat.messages)
        return GenerateRequest(wire.job_id, sampling, messages=turns)
    return GenerateRequest(wire.job_id, sampling, prompt=wire.prompt)


def _message_to_wire(turn: ChatTurn) -> pb.ChatMessage:
    message = pb.ChatMessage(
        role=turn.role,
        content=turn.content,
        tool_calls=[
            pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in turn.tool_calls
        ],
    )
    if turn.tool_call_id is not None:
        message.tool_call_id = turn.tool_call_id
    return message


def _message_from_wire(message: pb.ChatMessage) -> ChatTurn:
    calls = tuple(ToolCall(c.name, c.arguments, c.id) for c in message.tool_calls)
    call_id = message.tool_call_id if message.HasField("tool_call_id") else None
    return ChatTurn(message.role, message.content, calls, call_id)


def event_to_wire(event: StreamEvent) -> pb.GenerateEvent:
    if isinstance(event, Token):
        if event.logprobs:
            return pb.GenerateEvent(token=_token_with_logprobs(event))
        return pb.GenerateEvent(token=pb.Token(text=event.text, tokens=event.tokens))
    if isinstance(event, Started):
        started = pb.Started(tokens_in=event.tokens_in, tokens_cached=event.tokens_cached)
        return pb.GenerateEvent(started=started)
    if isinstance(event, End):
        return pb.GenerateEvent(
            end=pb.End(
                tokens_in=event.tokens_in,
                tokens_out=event.tokens_out,
                finish_reason=event.finish_reason,
                ttft_ms=event.ttft_ms,
                decode_time_ms=event.decode_time_ms,
            )
        )
    error = pb.Error(code=event.code, message=event.message, retriable=event.retriable)
    return pb.GenerateEvent(error=error)


def event_from_wire(wire: pb.GenerateEvent, *, tokens_seen: bool) -> StreamEvent | None:
    """Domain event for one wire event; None for an event with no payload (malformed)."""
    kind = wire.WhichOneof("event")
    if kind == "token":
        token = wire.token
        if token.logprobs:
            return Token(token.text, token.tokens or 1, _logprobs_from_wire(token.logprobs))
        return Token(token.text, token.tokens or 1)
    if kind == "started":
        return Started(wire.started.tokens_in, wire.started.tokens_cached)
    if kind == "end":
        end = wire.end
        return End(
            end.tokens_in, end.tokens_out, end.finish_reason, end.ttft_ms, end.decode_time_ms
        )
    if kind == "error":
        err = wire.error
        return Failed(err.code, err.message, err.retriable, before_first_token=not tokens_seen)
    return None


def _token_with_logprobs(event: Token) -> pb.Token:
    return pb.Token(
        text=event.text,
        tokens=event.tokens,
        logprobs=[
            pb.TokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                token_bytes=lp.token_bytes,
                top=[
                    pb.TopLogprob(token=t.token, logprob=t.logprob, token_bytes=t.token_bytes)
                    for t in lp.top
                ],
            )
            for lp in event.logprobs
        ],
    )


def _logprobs_from_wire(
    entries: Iterable[pb.TokenLogprob],
) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(
            lp.token,
            lp.logprob,
            lp.token_bytes,
            tuple(TopLogprob(t.token, t.logprob, t.token_bytes) for t in lp.top),
        )
        for lp in entries
    )


def health_to_wire(health: EngineHealth) -> pb.HealthReply:
    return pb.HealthReply(
        state=health.state,
        message=health.message,
        slots_total=health.slots_total,
        slots_busy=health.slots_busy,
        load_progress=health.load_progress,
    )


def health_from_wire(wire: pb.HealthReply) -> EngineHealth:
    state = wire.state if wire.state in ("loading", "ready", "failed") else "failed"
    progress = wire.load_progress if wire.HasField("load_progress") else None
    return EngineHealth(state, wire.message, wire.slots_total, wire.slots_busy, progress)  # type: ignore[arg-type]


def props_to_wire(props: EngineProps) -> pb.PropsReply:
    return pb.PropsReply(
        engine=props.engine,
        engine_version=props.engine_version,
        model_path=props.model_path,
        ctx=props.ctx,
        slots_total=props.slots_total,
        chat_template=props.chat_template,
        features=sorted(props.features),
        incarnation=props.incarnation,
    )


def props_from_wire(wire: pb.PropsReply) -> EngineProps:
    return EngineProps(
        engine=wire.engine,
        engine_version=wire.engine_version,
        ctx=wire.ctx,
        slots_total=wire.slots_total,
        chat_template=wire.chat_template,
        features=frozenset(wire.features),
        model_path=wire.model_path,
        incarnation=wire.incarnation,
    )
