"""The OpenAI-compatible facade (API-13): `/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`.

A translation layer, not a proxy: each request becomes a llorch task (through the
generated `TaskRequest`, so the same validation applies) and runs through the same
admission, placement and dispatch. Streams read the task's event log in decoded form
and re-frame each token as an OpenAI chunk by splicing the token's JSON text literal
into a prebuilt template (no decode/encode per token). Usage counts come from the
engine (`tokens_in` and `tokens_out` of `end`; `tokens_in` of `started` when the end has
none: an OpenAI-style engine reports its prompt count only with the last chunk).
Logprobs, when asked, come in OpenAI's shapes (`logprobs.CompletionLogprobs` for the
legacy completions one); those streams decode each token event, the others never do.
Errors use OpenAI's error body (`http.errors`, as every layer's refusals on `/v1/` do);
its `code` is llorch's error code (so clients can tell `ADMISSION_REJECT` from `QUOTA_EXCEEDED`).

No field is silently ignored (API-16): `http.request_fields` says how each field of the
three requests is honoured, by llorch itself or by the engine as a parameter of the
capability matrix. A field the document does not list is refused with UNSUPPORTED_PARAM
naming it; `tools`, `tool_choice`, `parallel_tool_calls` and `logit_bias` become
parameters the job needs (admission refuses one that no pool of the model honours:
`logit_bias` everywhere, tools where the engine cannot call them); refusals name OpenAI's
field (`param`: `response_format`, not `json_schema`).

Tool calling (API-17, `http.openai_tools`): the request's tools go into the task's
sampling; the answer's calls, checked by the orchestrator against the tools' schemas
before the end, come back as `message.tool_calls` or `delta.tool_calls` chunks with
`finish_reason: tool_calls`.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pydantic
from specs.api.models import (
    OpenAIChatRequest,
    OpenAICompletionRequest,
    OpenAIEmbeddingRequest,
    TaskRequest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.core import Orchestrator
from orchestratord.errors import STATUS_BY_CODE, ApiError, Detail
from orchestratord.events import token_text_json
from orchestratord.http.body import parse_body, read_json_body
from orchestratord.http.errors import error_response, openai_error_type
from orchestratord.http.openai_tools import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    ToolStream,
    message_of,
    needs_tools,
    with_tools,
)
from orchestratord.http.request_fields import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    openai_unsupported,
    unknown_fields,
    wanted_params,
)
from orchestratord.http.sse import SseResponse
from orchestratord.http.translate import TASK_ID_HEADER, submission_for, task_from_wire
from orchestratord.job_trace import client_trace
from orchestratord.journal.records import JournaledTask
from orchestratord.logprobs import CompletionLogprobs
from orchestratord.tasks import TaskRecord, TaskSpec

__all__ = ["facade_spec", "journaled_spec", "openai_routes"]

DEFAULT_MAX_TOKENS = 256
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Handler = Callable[[Request], Awaitable[Response]]


def _invalid(exc: pydantic.ValidationError) -> ApiError:
    errors = exc.errors(include_input=False, include_url=False)[:16]
    details = [Detail(e["msg"], field=".".join(str(p) for p in e["loc"]) or "body") for e in errors]
    summary = "; ".join(f"{d.field}: {d.reason}" for d in details[:4])
    return ApiError("INVALID_PARAMS", summary, details=details)


def _parse(model: type[pydantic.BaseModel], raw: bytes) -> Any:
    """As every body is read (`parse_body`): strictly, `8.0` an integer, no `null` where
    the document allows none."""
    return parse_body(model, raw, "request")


def _raw_text(raw: bytes, task_request: TaskRequest) -> str:
    """The journal's copy of an OpenAI request: the body as it came (no second encoding
    per job; `journaled_spec` translates it again after a restart)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # not JSON as OpenAI's clients send it: keep ours
        return task_request.model_dump_json(exclude_none=True)


def journaled_spec(row: JournaledTask) -> TaskSpec:
    """A journaled facade job's spec, from its request as it came (`route` chat or
    completion), translated as when it was accepted; same task id."""
    return facade_spec(
        row.route,
        row.wire.encode(),
        task_id=row.task_id,
        correlation_id=row.correlation_id,
        api_key=row.api_key,
    )


def facade_spec(
    route: str,
    raw: bytes,
    *,
    task_id: str | None = None,
    correlation_id: str = "",
    api_key: str | None = None,
    max_prompt_bytes: int = 1 << 62,
) -> TaskSpec:
    """The task a chat or completion request (its JSON body) becomes, with the
    parameters it needs from the engine (API-16); ApiError as the route would refuse it
    before admission (a field llorch does not carry, an invalid value)."""
    task_request: TaskRequest
    body: pydantic.BaseModel
    if route == "chat":
        chat: OpenAIChatRequest = _parse(OpenAIChatRequest, raw)
        body, task_request, table = chat, _task_request(_chat_wire(chat)), CHAT_FIELDS
    else:
        completion: OpenAICompletionRequest = _parse(OpenAICompletionRequest, raw)
        body, table = completion, COMPLETION_FIELDS
        task_request = _task_request(_completion_wire(completion))
    unknown_fields(body)
    if task_id is not None:
        task_request = task_request.model_copy(update={"task_id": task_id})
    spec = task_from_wire(
        task_request,
        correlation_id=correlation_id,
        max_prompt_bytes=max_prompt_bytes,
        allow_embedding=True,
        api_key=api_key,
        extra_params=_wanted(body, table),
    )
    return _with_tools(spec, body, task_request)


def _wanted(body: pydantic.BaseModel, table: Mapping[str, Any]) -> frozenset[str]:
    """The parameters the job needs beyond its `TaskRequest`'s: history with tool calls
    needs the engine's tools as `tools` does."""
    wanted = wanted_params(body, table)
    if isinstance(body, OpenAIChatRequest) and needs_tools(body):
        return wanted | {"tools"}
    return wanted


def _with_tools(spec: TaskSpec, body: pydantic.BaseModel, task_request: TaskRequest) -> TaskSpec:
    if not isinstance(body, OpenAIChatRequest):
        return spec
    return with_tools(spec, body, [m.content for m in task_request.messages or ()])


def _task_request(wire: dict[str, Any]) -> TaskRequest:
    """The same validation as `/v2/tasks`, from the dict (no JSON round trip)."""
    try:
        return TaskRequest.model_validate({k: v for k, v in wire.items() if v is not None})
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None


def _stop(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    value = stop.root
    return [value] if isinstance(value, str) else [item.root for item in value]


def _sampling(body: OpenAIChatRequest | OpenAICompletionRequest) -> dict[str, Any]:
    return {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "stop": _stop(body.stop),
    }


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content.root)


_TASK_ROLES = {"developer": "system", "tool": "user"}  # the task's validation only


def _chat_wire(body: OpenAIChatRequest) -> dict[str, Any]:
    """The task of a chat request. A `tool` turn stands as a user turn here (the
    `TaskRequest` schema has no tool role); `with_tools` puts the real turns back."""
    messages = [
        {"role": _TASK_ROLES.get(m.role, m.role), "content": _content(m.content)}
        for m in body.messages
    ]
    wire = {
        "model": body.model,
        "workload": "chat",
        "messages": messages,
        "max_tokens": body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        **_sampling(body),
    }
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(
            "INVALID_PARAMS",
            "top_logprobs: needs logprobs: true",
            details=[Detail("needs logprobs: true", field="top_logprobs")],
        )
    if body.logprobs:
        wire["logprobs"] = body.top_logprobs or 0
    response_format = body.response_format
    if response_format is not None and response_format.type == "json_object":
        wire["json_schema"] = {"type": "object"}
    elif response_format is not None and response_format.type == "json_schema":
        schema = response_format.json_schema.schema_ if response_format.json_schema else None
        wire["json_schema"] = schema or {}
    return wire


def _completion_wire(body: OpenAICompletionRequest) -> dict[str, Any]:
    given = body.prompt.root
    prompt = given if isinstance(given, str) else given[0].root
    wire = {
        "model": body.model,
        "workload": "completion",
        "prompt": prompt,
        "max_tokens": body.max_tokens or DEFAULT_MAX_TOKENS,
        **_sampling(body),
    }
    if body.logprobs is not None:
        wire["logprobs"] = body.logprobs
    return wire


class _Framer:
    """Builds OpenAI chunks for one task: prebuilt prefix, spliced content."""

    def __init__(self, record: TaskRecord, chat: bool) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + record.task_id
        self.model = json.dumps(record.spec.model)
        kind = "chat.completion.chunk" if chat else "text_completion"
        self._head = (
            f'data: {{"id":"{self.id}","object":"{kind}","created":{int(time.time())},'
            f'"model":{self.model},"choices":['
        )
        self._content_head = self._head + (
            '{"index":0,"delta":{"content":' if chat else '{"index":0,"text":'
        )
        self._content_tail = (
            '},"finish_reason":null}]}\n\n'
            if chat
            else ',"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def role(self) -> bytes:
        return (
            self._head + '{"index":0,"delta":{"role":"assistant","content":""},'
            '"finish_reason":null}]}\n\n'
        ).encode()

    def content(self, literal: str) -> str:
        return self._content_head + literal + self._content_tail

    def content_with_logprobs(self, literal: str, logprobs: dict[str, Any]) -> str:
        """A content chunk with its choice's `logprobs` (chat: `{content: [...]}`;
        completions: the legacy shape)."""
        tail = f',"logprobs":{json.dumps(logprobs, ensure_ascii=False)},"finish_reason":null}}]}}'
        if self.chat:
            return self._content_head + literal + "}" + tail + "\n\n"
        return self._content_head + literal + tail + "\n\n"

    def tool_piece(self, piece: ContentDelta | CallStart | ArgumentsDelta) -> str:
        """A chunk of a streamed answer with tools: text, a call's start (id and name),
        or a fragment of its arguments, as OpenAI streams them."""
        if isinstance(piece, ContentDelta):
            return self.content(json.dumps(piece.text, ensure_ascii=False))
        if isinstance(piece, CallStart):
            call: dict[str, Any] = {
                "index": piece.index,
                "id": piece.id,
                "type": "function",
                "function": {"name": piece.name, "arguments": ""},
            }
        else:
            call = {"index": piece.index, "function": {"arguments": piece.fragment}}
        delta = json.dumps({"tool_calls": [call]}, ensure_ascii=False)
        return self._head + f'{{"index":0,"delta":{delta},"finish_reason":null}}]}}\n\n'

    def finish(self, reason: str) -> str:
        choice = '{"index":0,"delta":{},' if self.chat else '{"index":0,"text":"","logprobs":null,'
        return self._head + choice + f'"finish_reason":"{reason}"}}]}}\n\n'

    def usage(self, usage: dict[str, int]) -> str:
        return self._head + f'],"usage":{json.dumps(usage)}}}\n\n'


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def _end_usage(started: dict[str, Any], end: dict[str, Any]) -> dict[str, int]:
    """The engine's counts: the prompt's from `end` (its final count), else `started`."""
    return _usage(end.get("tokens_in") or started.get("tokens_in", 0), end["tokens_out"])


def _stream(
    orchestrator: Orchestrator, record: TaskRecord, chat: bool, include_usage: bool
) -> Response:
    framer = _Framer(record, chat)
    subscriber = record.events.subscribe_decoded()
    shaper = _logprobs_shaper(record, chat)
    tools = ToolStream(record.task_id) if chat and _may_call(record) else None

    async def chunks() -> AsyncIterator[bytes]:
        tokens_in = 0
        try:
            # The role chunk goes out with the first chunk that has something in it (a
            # token, the end or an error), not alone before it: one write less while
            # the engine works on the first token.
            role = framer.role().decode() if chat else ""
            while (events := await subscriber.next_events()) is not None:
                parts: list[str] = []
                for name, data in events:
                    if name == "token" and tools is not None:
                        parts.extend(map(framer.tool_piece, tools.feed(json.loads(data)["t"])))
                    elif name == "token" and shaper is not None:
                        entries = json.loads(data).get("logprobs") or []
                        parts.append(
                            framer.content_with_logprobs(token_text_json(data), shaper(entries))
                        )
                    elif name == "token":
                        parts.append(framer.content(token_text_json(data)))
                    elif name == "started":
                        tokens_in = int(json.loads(data)["tokens_in"])
                    elif name == "end":
                        end = json.loads(data)
                        reason = end["finish_reason"]
                        if tools is not None:
                            parts.extend(map(framer.tool_piece, tools.finish()))
                            reason = "tool_calls" if tools.calls else reason
                        parts.append(framer.finish(reason))
                        if include_usage:
                            prompt_tokens = end.get("tokens_in") or tokens_in
                            parts.append(framer.usage(_usage(prompt_tokens, end["tokens_out"])))
                        parts.append("data: [DONE]\n\n")
                    elif name == "error":
                        error = json.loads(data)
                        status = STATUS_BY_CODE.get(error["code"], 500)
                        body = {
                            "error": {
                                "message": error["message"],
                                "type": openai_error_type(status),
                                "param": None,
                                "code": error["code"],
                            }
                        }
                        parts.append(f"data: {json.dumps(body)}\n\n")
                if parts:
                    if role:
                        parts.insert(0, role)
                        role = ""
                    yield "".join(parts).encode()
        finally:
            subscriber.detach()
            if not record.done:
                orchestrator.subscriber_left(record.task_id)

    return SseResponse(chunks(), headers={**_SSE_HEADERS, TASK_ID_HEADER: record.task_id})


def _may_call(record: TaskRecord) -> bool:
    """The task has tools the model may call (its output may be calls)."""
    sampling = record.spec.request.sampling
    return sampling.tools is not None and sampling.tool_choice != "none"


def _logprobs_shaper(
    record: TaskRecord, chat: bool
) -> Callable[[list[dict[str, Any]]], dict[str, Any]] | None:
    """How a chunk's logprob entries become its choice's `logprobs`; None when the task
    did not ask for logprobs (the stream then splices text only)."""
    if record.spec.request.sampling.logprobs is None:
        return None
    if chat:
        return lambda entries: {"content": entries}
    return CompletionLogprobs().shape


async def _collect(
    record: TaskRecord, logprobs: list[dict[str, Any]] | None = None
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Wait for the terminal event: (text, started, end) or raise ApiError for an error.
    Token logprob entries are appended to `logprobs` when given."""
    subscriber = record.events.subscribe_decoded()
    texts: list[str] = []
    started: dict[str, Any] = {}
    try:
        while (events := await subscriber.next_events()) is not None:
            for name, data in events:
                if name == "token":
                    token = json.loads(data)
                    texts.append(token["t"])
                    if logprobs is not None:
                        logprobs.extend(token.get("logprobs") or ())
                elif name == "started":
                    started = json.loads(data)
                elif name == "end":
                    return "".join(texts), started, json.loads(data)
                elif name == "error":
                    error = json.loads(data)
                    raise ApiError(
                        error["code"],
                        error["message"],
                        retriable=error["retriable"],
                    )
    finally:
        subscriber.detach()
    return "".join(texts), started, None


def _base64_vector(vector: Sequence[float]) -> str:
    """OpenAI's `encoding_format: base64`: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


_FIELDS = {"chat": CHAT_FIELDS, "completion": COMPLETION_FIELDS, "embedding": EMBEDDING_FIELDS}


def openai_routes(orchestrator: Orchestrator) -> list[Route]:
    config = orchestrator.config

    async def admit(
        request: Request,
        wire: dict[str, Any],
        correlation_id: str,
        route: str,
        body: pydantic.BaseModel,
        *,
        streamed: bool,
        raw: bytes | None = None,
    ) -> TaskRecord:
        table = _FIELDS[route]
        unknown_fields(body)
        task_request = _task_request(wire)
        spec = task_from_wire(
            task_request,
            correlation_id=correlation_id,
            max_prompt_bytes=config.max_prompt_bytes,
            allow_embedding=True,
            api_key=request.scope.get("state", {}).get("api_key"),
            extra_params=_wanted(body, table),
        )
        spec = _with_tools(spec, body, task_request)
        submission = submission_for(
            request.headers,
            task_request,
            route,
            wire_text=None if raw is None else lambda: _raw_text(raw, task_request),
            digest_of=body.model_dump_json,
            two_step=False,
            journaled=route != "embedding",
        )
        if not streamed and submission.idempotency_key is not None:
            # A client retrying a plain request is waiting for the job's result: it
            # must not be cancelled by the first request's disconnect.
            submission = replace(submission, detached=True)
        try:
            return await orchestrator.submit(
                spec, submission, trace_parent=client_trace(request.headers)
            )
        except ApiError as exc:
            raise openai_unsupported(exc, table) from None

    async def body_of(request: Request) -> bytes:
        return await read_json_body(request, config.max_body_bytes)

    def correlation(request: Request) -> str:
        return str(request.scope.get("state", {}).get("correlation_id", ""))

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                if request.method == "POST":
                    orchestrator.metrics.rejected.labels(exc.code).inc()
                return error_response(exc, correlation(request), request.url.path)

        return run

    async def chat(request: Request) -> Response:
        raw = await body_of(request)
        body: OpenAIChatRequest = _parse(OpenAIChatRequest, raw)
        record = await admit(
            request,
            _chat_wire(body),
            correlation(request),
            "chat",
            body,
            streamed=bool(body.stream),
            raw=raw,
        )
        if body.stream:
            options = body.stream_options
            return _stream(orchestrator, record, True, bool(options and options.include_usage))
        entries: list[dict[str, Any]] = []
        text, started, end = await _collect(record, entries)
        assert end is not None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish_reason = end["finish_reason"]
        if _may_call(record):
            message, called = message_of(text, record.task_id, "auto")
            finish_reason = "tool_calls" if called else finish_reason
        return Response(
            json.dumps(
                {
                    "id": "chatcmpl-" + record.task_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": {"content": entries} if body.logprobs else None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": _end_usage(started, end),
                }
            ),
            media_type="application/json",
            headers={TASK_ID_HEADER: record.task_id},
        )

    async def completions(request: Request) -> Response:
        raw = await body_of(request)
        body: OpenAICompletionRequest = _parse(OpenAICompletionRequest, raw)
        record = await admit(
            request,
            _completion_wire(body),
            correlation(request),
            "completion",
            body,
            streamed=bool(body.stream),
            raw=raw,
        )
        if body.stream:
            options = body.stream_options
            return _stream(orchestrator, record, False, bool(options and options.include_usage))
        entries: list[dict[str, Any]] = []
        text, started, end = await _collect(record, entries)
        assert end is not None
        logprobs = CompletionLogprobs().shape(entries) if body.logprobs is not None else None
        return Response(
            json.dumps(
                {
                    "id": "cmpl-" + record.task_id,
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "text": text,
                            "logprobs": logprobs,
                            "finish_reason": end["finish_reason"],
                        }
                    ],
                    "usage": _end_usage(started, end),
                }
            ),
            media_type="application/json",
            headers={TASK_ID_HEADER: record.task_id},
        )

    async def embeddings(request: Request) -> Response:
        body: OpenAIEmbeddingRequest = _parse(OpenAIEmbeddingRequest, await body_of(request))
        inputs = [body.input] if isinstance(body.input, str) else list(body.input.root)
        wire = {"model": body.model, "workload": "embedding", "inputs": inputs}
        record = await admit(request, wire, correlation(request), "embedding", body, streamed=False)
        _, started, _ = await _collect(record)
        vectors = record.embeddings
        size = len(vectors[0]) if vectors else 0
        if body.dimensions is not None and body.dimensions != size:
            raise ApiError(
                "INVALID_PARAMS",
                f"dimensions {body.dimensions} is not the model's embedding size {size}; "
                "this server does not shorten embeddings (leave dimensions out)",
                details=[Detail("unsupported value", field="dimensions")],
            )
        encode = _base64_vector if body.encoding_format == "base64" else list
        return Response(
            json.dumps(
                {
                    "object": "list",
                    "model": body.model,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": encode(v)}
                        for i, v in enumerate(vectors)
                    ],
                    "usage": {
                        "prompt_tokens": started.get("tokens_in", 0),
                        "total_tokens": started.get("tokens_in", 0),
                    },
                }
            ),
            media_type="application/json",
        )

    async def models(request: Request) -> Response:
        names: dict[str, None] = {}
        for pool in orchestrator.registry.pools():
            for name in (pool.model_id, *sorted(pool.model_aliases)):
                names.setdefault(name)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "llorch"} for name in names
        ]
        return Response(json.dumps({"object": "list", "data": data}), media_type="application/json")

    return [
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
    ]
