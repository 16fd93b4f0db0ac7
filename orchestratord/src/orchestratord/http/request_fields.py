"""How each field of the request schemas is honoured (API-16): `/v2/tasks`
(`TASK_FIELDS`) and the OpenAI facade's three requests (API-13), one table each.

A field is honoured by llorch itself (`LLORCH`: routing, framing, a limit the document
states) or by the engine as a parameter of the capability matrix
(`worker_adapters.capabilities`), which placement checks against each pool's engine kind
(refused with UNSUPPORTED_PARAM when no pool of the model honours it). Fields the
document does not list, and message fields other than `role` and `content`, are refused
here, before admission: no engine behind llorch could honour what llorch does not carry.

`tools`, `tool_choice`, `parallel_tool_calls` and `logit_bias` have no `TaskRequest`
field (`/v2/tasks` offers no tool calling: its schema refuses them as unknown fields):
when set, the facade adds their parameter to the job's needs (`wanted_params`), so the
matrix decides (tools: llama-server and the in-process engine, on chat; `logit_bias`:
no engine kind). A message's `tool_calls` and `tool_call_id` need `tools` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from specs.api.models import OpenAIChatRequest, TaskRequest

from orchestratord.errors import ApiError, Detail

__all__ = [
    "CHAT_FIELDS",
    "COMPLETION_FIELDS",
    "EMBEDDING_FIELDS",
    "MESSAGE_FIELDS",
    "TASK_FIELDS",
    "Honoured",
    "openai_field",
    "openai_unsupported",
    "unknown_fields",
    "wanted_params",
]


@dataclass(frozen=True, slots=True)
class Honoured:
    """`param`: the capability-matrix parameter the engine must honour; None when llorch
    itself honours the field, as `how` says. `refused`: llorch refuses the field
    whatever the engine (UNSUPPORTED_PARAM), with `how` as the reason."""

    how: str
    param: str | None = None
    refused: bool = False


def _engine(param: str, how: str = "") -> Honoured:
    return Honoured(how or f"the engine's {param}", param)


LLORCH_MODEL = Honoured("selects the pools serving that model (id or alias)")
LLORCH_USER = Honoured("accepted; no effect on the output (OpenAI uses it for abuse reports)")
LLORCH_STREAM = Honoured("streams OpenAI chunks")
LLORCH_STREAM_OPTIONS = Honoured("include_usage adds the usage chunk")
LLORCH_N = Honoured("one choice (the document allows n = 1 only)")

TASK_FIELDS: Mapping[str, Honoured] = {
    "task_id": Honoured("the task's id (client-chosen)"),
    "session_id": Honoured("the session: affinity to its warm pool, turns, budgets"),
    "session": Honoured("the session's TTL, turns and budgets when it is created"),
    "workload": Honoured("completion or chat (embedding on /v1/embeddings)"),
    "model": LLORCH_MODEL,
    "prompt": Honoured("the prompt"),
    "messages": Honoured("the conversation, rendered by the model's chat template"),
    "inputs": Honoured("texts to embed (/v1/embeddings only)"),
    **{
        name: _engine(name)
        for name in (
            "max_tokens",
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
            "seed",
            "stop",
            "logprobs",
            "grammar",
            "json_schema",
        )
    },
    "priority": Honoured("the queue lane (interactive before batch)"),
    "deadline_ms": Honoured("the task fails once past it"),
    "placement": Honoured("pin, prefer and avoid pools"),
}
CHAT_FIELDS: Mapping[str, Honoured] = {
    "model": LLORCH_MODEL,
    "messages": Honoured("the conversation, rendered by the model's chat template"),
    "max_tokens": _engine("max_tokens"),
    "max_completion_tokens": _engine("max_tokens", "the engine's max_tokens (wins)"),
    "temperature": _engine("temperature"),
    "top_p": _engine("top_p"),
    "n": LLORCH_N,
    "stream": LLORCH_STREAM,
    "stream_options": LLORCH_STREAM_OPTIONS,
    "stop": _engine("stop"),
    "seed": _engine("seed"),
    "presence_penalty": _engine("presence_penalty"),
    "frequency_penalty": _engine("frequency_penalty"),
    "logprobs": _engine("logprobs"),
    "top_logprobs": _engine("logprobs", "the engine's logprobs (how many alternatives)"),
    "response_format": _engine("json_schema", "json_object/json_schema: the engine's json_schema"),
    "user": LLORCH_USER,
    "tools": _engine("tools"),
    "tool_choice": _engine("tool_choice"),
    "parallel_tool_calls": _engine("tools", "part of tool calling (the engine's tools)"),
    "logit_bias": _engine("logit_bias"),
}
COMPLETION_FIELDS: Mapping[str, Honoured] = {
    "model": LLORCH_MODEL,
    "prompt": Honoured("the prompt (one string)"),
    "max_tokens": _engine("max_tokens"),
    "temperature": _engine("temperature"),
    "top_p": _engine("top_p"),
    "n": LLORCH_N,
    "best_of": Honoured("one candidate (the document allows best_of = 1 only)"),
    "echo": Honoured("the prompt is not echoed (the document allows false only)"),
    "stream": LLORCH_STREAM,
    "stream_options": LLORCH_STREAM_OPTIONS,
    "stop": _engine("stop"),
    "seed": _engine("seed"),
    "presence_penalty": _engine("presence_penalty"),
    "frequency_penalty": _engine("frequency_penalty"),
    "logprobs": _engine("logprobs"),
    "user": LLORCH_USER,
    "logit_bias": _engine("logit_bias"),
}
EMBEDDING_FIELDS: Mapping[str, Honoured] = {
    "model": LLORCH_MODEL,
    "input": Honoured("the texts to embed"),
    "encoding_format": Honoured("float lists, or base64 of little-endian float32"),
    "dimensions": Honoured("only the model's own size is served; another is refused"),
    "user": LLORCH_USER,
}
MESSAGE_FIELDS: Mapping[str, Honoured] = {
    "role": Honoured("the turn's role (developer is passed as system)"),
    "content": Honoured("the turn's text (text parts joined)"),
    "name": Honoured("speaker names are not carried to engines", refused=True),
    "tool_calls": _engine("tools", "an assistant turn's calls: the engine's tools"),
    "tool_call_id": _engine("tools", "the call a tool turn answers: the engine's tools"),
}


def _refusal(fields: list[str], why: str) -> ApiError:
    return ApiError(
        "UNSUPPORTED_PARAM",
        f"{', '.join(fields)}: {why}",
        details=[Detail(why, field=name) for name in fields],
    )


def unknown_fields(body: pydantic.BaseModel) -> None:
    """ApiError UNSUPPORTED_PARAM naming the fields llorch does not carry: those the
    document does not list (extra fields), and message fields other than role and
    content (`name`, `tool_calls`, ...), when set."""
    unknown = sorted(body.model_extra or {})
    if isinstance(body, OpenAIChatRequest):
        for index, message in enumerate(body.messages):
            present = message.model_fields_set | set(message.model_extra or {})
            given = {name for name in present if getattr(message, name, None) is not None}
            carried = {name for name, h in MESSAGE_FIELDS.items() if not h.refused}
            unknown += [f"messages.{index}.{name}" for name in sorted(given - carried)]
    if unknown:
        raise _refusal(unknown, "not a field llorch carries to any engine (never ignored)")


def wanted_params(body: pydantic.BaseModel, table: Mapping[str, Honoured]) -> frozenset[str]:
    """Parameters the job needs for fields `TaskRequest` has no room for (set and not
    empty), e.g. `tools`: placement then checks them against the matrix."""
    wanted = set()
    for name, honoured in table.items():
        if honoured.param is None or honoured.param in TaskRequest.model_fields:
            continue
        value: Any = getattr(body, name, None)
        if value is not None and value != [] and value != {}:
            wanted.add(honoured.param)
    return frozenset(wanted)


def openai_field(param: str, table: Mapping[str, Honoured]) -> str:
    """The request field that carries `param` (the first the table lists), for errors."""
    return next((name for name, h in table.items() if h.param == param), param)


def openai_unsupported(error: ApiError, table: Mapping[str, Honoured]) -> ApiError:
    """An UNSUPPORTED_PARAM refusal of admission, its parameters renamed to the fields of
    the OpenAI request that set them (`json_schema` -> `response_format`)."""
    if error.code != "UNSUPPORTED_PARAM":
        return error
    details = [
        Detail(d.reason, openai_field(d.field, table), d.pool_id, d.check, d.wanted, d.available)
        if d.field is not None
        else d
        for d in error.details
    ]
    names, _, rest = error.message.partition(": ")
    renamed = ", ".join(openai_field(name, table) for name in names.split(", "))
    return ApiError(
        error.code,
        f"{renamed}: {rest}" if rest else error.message,
        status=error.status,
        details=details,
    )
