"""Wire (the generated `specs.api.models.TaskRequest`) -> domain `TaskSpec`.

Nothing past this module sees generated types. Checks that the schema cannot express
(which input each workload needs, grammar xor json_schema, prompt size, and the rules of
`admission.validate`) are made here and raise `ApiError(INVALID_PARAMS)` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from specs.api.models import TaskRequest
from worker_adapters import ChatTurn, GenerateRequest, Sampling
from worker_adapters.capabilities import requested_params
from worker_adapters.constraints import json_schema_converter

from orchestratord.admission.validate import (
    Refusal,
    grammar_defines_root,
    json_schema_valid,
    prompt_not_empty,
)
from orchestratord.errors import ApiError, Detail
from orchestratord.journal.records import JournaledTask
from orchestratord.placement import JobNeeds, Overrides
from orchestratord.sessions import SessionOptions
from orchestratord.stats import prefix_keys
from orchestratord.tasks import Submission, TaskRecord, TaskSpec

__all__ = [
    "DEFAULT_MAX_GRAMMAR_BYTES",
    "TASK_ID_HEADER",
    "prompt_token_bound",
    "refusal_error",
    "spec_from_journal",
    "submission_for",
    "task_from_wire",
    "task_summary",
]

# The document's limit on `grammar` (SEC-03); a JSON schema and its grammar share it.
DEFAULT_MAX_GRAMMAR_BYTES = 65_536
ON_DISCONNECT = "x-llorch-on-disconnect"
TASK_ID_HEADER = "X-Llorch-Task-Id"  # on /v1 responses: the job behind them

# Upper bound on template tokens around each chat message, and around the whole chat.
_CHAT_TOKENS_PER_MESSAGE = 32
_CHAT_TOKENS_FIXED = 256


def _invalid(field: str, message: str) -> ApiError:
    return ApiError("INVALID_PARAMS", f"{field}: {message}", details=[Detail(message, field=field)])


def prompt_token_bound(prompt: str | None, messages: tuple[ChatTurn, ...] | None) -> int:
    """An upper bound on prompt tokens: byte-level and byte-fallback tokenizers produce at
    most one token per byte (plus BOS/EOS); chat adds a bound for the template."""
    if messages is None:
        return len((prompt or "").encode()) + 2
    content = sum(len(m.content.encode()) + len(m.role) for m in messages)
    return content + _CHAT_TOKENS_PER_MESSAGE * len(messages) + _CHAT_TOKENS_FIXED


def task_from_wire(
    body: TaskRequest,
    *,
    correlation_id: str,
    max_prompt_bytes: int,
    allow_embedding: bool = False,
    api_key: str | None = None,
    max_grammar_bytes: int = DEFAULT_MAX_GRAMMAR_BYTES,
    extra_params: frozenset[str] = frozenset(),
) -> TaskSpec:
    """The domain task for a validated request. Embedding tasks are accepted only where
    the caller can deliver vectors (the OpenAI facade), not on `/v2/tasks`. Checks of
    `admission.validate` run here, before the task exists (SEC-03): an empty prompt, a
    grammar without `root`, a JSON schema the engine's converter cannot take.

    The job needs every request parameter it sets (`requested_params`, plus
    `extra_params`: those the facade takes that `TaskRequest` has no field for, e.g.
    `tools`) honoured by its pool's engine kind (API-16): placement's `params` check."""
    workload = body.workload or "completion"
    if workload == "embedding":
        spec = _embedding_task(body, correlation_id, max_prompt_bytes, allow_embedding)
        return replace(spec, api_key=api_key)
    prompt, messages = _inputs(body, workload)
    size = len((prompt or "").encode()) + sum(len(m.content.encode()) for m in messages or ())
    if size > max_prompt_bytes:
        raise _invalid(
            "prompt" if prompt is not None else "messages",
            f"{size} bytes exceeds the limit of {max_prompt_bytes} bytes",
        )
    if body.grammar is not None and body.json_schema is not None:
        raise _invalid("grammar", "give at most one of grammar and json_schema")
    _refuse(
        prompt_not_empty(prompt),
        grammar_defines_root(body.grammar),
        json_schema_valid(
            body.json_schema,
            max_grammar_bytes=max_grammar_bytes,
            convert=json_schema_converter(),
        ),
    )
    max_tokens = body.max_tokens or 128
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        min_p=body.min_p,
        repeat_penalty=body.repeat_penalty,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        stop=tuple(s.root for s in body.stop or ()),
        grammar=body.grammar,
        json_schema=json.dumps(body.json_schema) if body.json_schema is not None else None,
        logprobs=body.logprobs,
    )
    task_id = body.task_id or uuid.uuid4().hex
    request = GenerateRequest(task_id, sampling, prompt=prompt, messages=messages)
    needs = JobNeeds(
        model=body.model,
        tokens=prompt_token_bound(prompt, messages) + max_tokens,
        features=frozenset({workload}),
        workload=workload,
        params=requested_params(sampling) | extra_params,
        overrides=_overrides(body),
        max_tokens=max_tokens,
        prefix_keys=prefix_keys(
            prompt if prompt is not None else "\n".join(m.content for m in messages or ())
        ),
    )
    return TaskSpec(
        task_id=task_id,
        model=body.model,
        workload=workload,
        priority=body.priority or "interactive",
        request=request,
        needs=needs,
        session_id=body.session_id,
        deadline_ms=body.deadline_ms,
        correlation_id=correlation_id,
        session_options=_session_options(body),
        api_key=api_key,
    )


def _refuse(*refusals: Refusal | None) -> None:
    """ApiError for the first refusal (400 INVALID_PARAMS, or 413 for a size limit)."""
    refusal = next((r for r in refusals if r is not None), None)
    if refusal is not None:
        raise refusal_error(refusal)


def refusal_error(refusal: Refusal) -> ApiError:
    return ApiError(
        "INVALID_PARAMS",
        f"{refusal.field}: {refusal.reason}",
        status=refusal.status,
        details=[Detail(refusal.reason, field=refusal.field)],
    )


def _session_options(body: TaskRequest) -> SessionOptions | None:
    options = body.session
    if options is None:
        return None
    return SessionOptions(
        ttl_ms=options.ttl_ms or 600_000,
        max_turns=options.max_turns or 8,
        tokens_budget=options.tokens_budget,
        time_budget_ms=options.time_budget_ms,
    )


def _embedding_task(
    body: TaskRequest, correlation_id: str, max_prompt_bytes: int, allowed: bool
) -> TaskSpec:
    if not allowed:
        raise _invalid("workload", "embedding tasks are served by /v1/embeddings")
    if body.inputs is None or body.prompt is not None or body.messages is not None:
        raise _invalid("inputs", "an embedding task takes inputs only")
    inputs = tuple(body.inputs)
    size = sum(len(text.encode()) for text in inputs)
    if size > max_prompt_bytes:
        raise _invalid("inputs", f"{size} bytes exceeds the limit of {max_prompt_bytes} bytes")
    task_id = body.task_id or uuid.uuid4().hex
    needs = JobNeeds(
        model=body.model,
        tokens=max((len(t.encode()) + 2 for t in inputs), default=0),
        features=frozenset({"embedding"}),
        workload="embedding",
        overrides=_overrides(body),
    )
    return TaskSpec(
        task_id=task_id,
        model=body.model,
        workload="embedding",
        priority=body.priority or "interactive",
        request=GenerateRequest(task_id, Sampling(max_tokens=1)),
        needs=needs,
        session_id=body.session_id,
        deadline_ms=body.deadline_ms,
        correlation_id=correlation_id,
        inputs=inputs,
    )


def _inputs(body: TaskRequest, workload: str) -> tuple[str | None, tuple[ChatTurn, ...] | None]:
    if workload == "chat":
        if body.messages is None:
            raise _invalid("messages", "a chat task needs messages")
        if body.prompt is not None or body.inputs is not None:
            raise _invalid("prompt", "a chat task takes messages only")
        return None, tuple(ChatTurn(m.role, m.content) for m in body.messages)
    if body.prompt is None:
        raise _invalid("prompt", "a completion task needs a prompt")
    if body.messages is not None or body.inputs is not None:
        raise _invalid("messages", "a completion task takes a prompt only")
    return body.prompt, None


def _overrides(body: TaskRequest) -> Overrides:
    placement = body.placement
    if placement is None:
        return Overrides()
    return Overrides(
        pin_pool_id=placement.pin_pool_id,
        prefer_pools=frozenset(p.root for p in placement.prefer_pools or ()),
        avoid_pools=frozenset(p.root for p in placement.avoid_pools or ()),
        allow_fallback=placement.allow_fallback if placement.allow_fallback is not None else True,
    )


def submission_for(
    headers: Mapping[str, str],
    wire: TaskRequest,
    route: str,
    *,
    two_step: bool,
    wire_text: Callable[[], str] | None = None,
    digest_of: Callable[[], str] | None = None,
    journaled: bool = True,
) -> Submission:
    """How a request came in: its `Idempotency-Key` and the request's digest (route and
    `digest_of()`, the request in canonical form; by default the wire form; computed only
    when a key came), and whether it runs on without a reader: always for two-step
    submits, and when a stream asks with `X-Llorch-On-Disconnect: continue` (`cancel`,
    the default for one-round-trip streams, ends it after the disconnect grace).

    What the journal keeps is `wire_text()` (the caller's JSON of the request, e.g. the
    body as it came: no second encoding per job) or else `wire` encoded."""
    on_disconnect, key = _submission_headers(headers)
    if on_disconnect not in ("", "continue", "cancel"):
        raise _invalid("X-Llorch-On-Disconnect", "must be continue or cancel")
    canonical = ""
    digest = ""
    if key is not None:
        canonical = (
            digest_of() if digest_of is not None else wire.model_dump_json(exclude_none=True)
        )
        digest = hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()
    text = ""
    if journaled:
        if wire_text is not None:
            text = wire_text()
        elif digest_of is None and canonical:
            text = canonical
        else:
            text = wire.model_dump_json(exclude_none=True)
    return Submission(
        wire=text,
        route=route,
        idempotency_key=key,
        digest=digest,
        detached=two_step or on_disconnect == "continue",
        client_task_id=wire.task_id is not None,
    )


_ON_DISCONNECT_RAW = ON_DISCONNECT.encode()
_IDEMPOTENCY_KEY_RAW = b"idempotency-key"


def _submission_headers(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """`X-Llorch-On-Disconnect` (lowercased, "" when absent) and `Idempotency-Key`, in
    one pass over the raw headers when they are Starlette's (a lookup each costs more)."""
    raw: list[tuple[bytes, bytes]] | None = getattr(headers, "raw", None)
    if raw is None:
        return headers.get(ON_DISCONNECT, "").strip().lower(), headers.get("idempotency-key")
    on_disconnect, key = "", None
    for name, value in raw:  # ASGI servers give header names lowercased
        if name == _ON_DISCONNECT_RAW:
            on_disconnect = value.decode("latin-1").strip().lower()
        elif name == _IDEMPOTENCY_KEY_RAW and key is None:
            key = value.decode("latin-1")
    return on_disconnect, key


def spec_from_journal(row: JournaledTask) -> TaskSpec:
    """A journaled job's spec, rebuilt from its request as accepted (same task id)."""
    wire = TaskRequest.model_validate_json(row.wire).model_copy(update={"task_id": row.task_id})
    return task_from_wire(
        wire,
        correlation_id=row.correlation_id,
        max_prompt_bytes=1 << 62,  # checked when it was accepted
        api_key=row.api_key,
    )


def task_summary(record: TaskRecord, now_ms: int | None = None) -> dict[str, object]:
    """One job as lists show it (`GET /v2/tasks`, `llorch ps`, the status page): who,
    where, its state as clients may see it, its queue position, and its timings on the
    wall clock (ms since the epoch): queued (`created_at_ms`) -> started -> first token
    -> end, with the waits between them and its rate. Never the prompt, the output or
    the API key itself (only its name). `now_ms`: the wall clock now (default: read
    it), for a job still running."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    state = record.shown_state
    ended = state == record.state and record.done
    created, started = record.created_at_ms, record.started_at_ms
    first_token_at = None if record.ttft_ms is None else created + round(record.ttft_ms)
    finished = record.finished_at_ms if ended else None
    decode_ms = record.decode_time_ms
    if decode_ms is None and first_token_at is not None:
        decode_ms = float(max(0, (finished or now_ms) - first_token_at))
    tokens = record.tokens_out if ended else record.token_events
    rate = tokens / (decode_ms / 1000.0) if decode_ms and tokens > 1 else None
    error = record.error if ended else None
    return {
        "task_id": record.task_id,
        "state": state,
        "model": record.spec.model,
        "workload": record.spec.workload,
        "priority": record.spec.priority,
        "owner": record.spec.api_key,
        "session_id": record.spec.session_id,
        "pool_id": record.pool_id,
        "queue_position": record.queue_position if state == "queued" else None,
        "attempts": record.attempts,
        "created_at_ms": created,
        "started_at_ms": started,
        "first_token_at_ms": first_token_at,
        "finished_at_ms": finished,
        "queue_wait_ms": None if started is None else max(0, started - created),
        "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 3),
        "decode_time_ms": None if decode_ms is None else round(decode_ms, 3),
        "total_ms": max(0, (finished or now_ms) - created),
        "tokens_in": record.tokens_in,
        "tokens_out": tokens,
        "tokens_per_s": None if rate is None else round(rate, 2),
        "finish_reason": record.finish_reason if ended else None,
        "error_code": None if error is None else error.code,
    }
