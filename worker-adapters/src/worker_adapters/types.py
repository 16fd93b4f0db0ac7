"""Domain types shared by every adapter: what goes in (a generation request) and what
comes out (a stream of events), plus the facts an engine reports about itself.

These are internal values, never wire types: each adapter translates them to and from
its engine's protocol at its own edge (STYLE.md rule 9). All are frozen dataclasses.

A stream is `Started`, then `Token`*, then exactly one terminal event: `End` or
`Failed`. `Failed.before_first_token` tells the dispatcher whether the job may be
re-queued (REL-02); `Failed.engine_lost` tells it the engine itself is gone, not just
this request (the vLLM distinction between "request failed" and "engine dead").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ChatTurn",
    "End",
    "EngineHealth",
    "EngineProps",
    "Failed",
    "GenerateRequest",
    "Sampling",
    "Started",
    "StreamEvent",
    "Token",
    "TokenLogprob",
    "Tokenized",
    "ToolCall",
    "TopLogprob",
]

HealthState = Literal["loading", "ready", "failed"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters of API-02; None means the engine's default."""

    max_tokens: int
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    json_schema: str | None = None
    # Present: report each token's logprob and this many alternatives (0..20).
    logprobs: int | None = None
    # Tool calling (API-17; only the OpenAI facade sets these): the functions as JSON
    # text, a list of `{"name", "description", "parameters"}`; whether the model may
    # (`auto`), must (`required`) or must not (`none`) call one (a named choice arrives
    # as `required` with that function alone); at most one call when False.
    tools: str | None = None
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a function by the model: `arguments` is JSON text of an object;
    `id` as the engine or the client named it ("" when none did)."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message: an assistant turn may carry the `tool_calls` it made; a `tool` turn
    answers the call `tool_call_id` with its `content`."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation: a raw `prompt`, or chat `messages` rendered by the model's template."""

    job_id: str
    sampling: Sampling
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None


@dataclass(frozen=True, slots=True)
class Started:
    tokens_in: int
    tokens_cached: int = 0


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """An alternative at one position: natural-log probability under the model."""

    token: str
    logprob: float
    token_bytes: bytes = b""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives (most
    likely first) at its position. `token` is text (invalid UTF-8 replaced);
    `token_bytes` the exact bytes when the engine reports them."""

    token: str
    logprob: float
    token_bytes: bytes = b""
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Token:
    """A text delta of whole UTF-8 characters produced by `tokens` engine tokens.

    `logprobs` is filled only when the request asked (`Sampling.logprobs`): one entry
    per engine token of this delta, in order (an engine may report fewer, e.g. none for
    tokens whose text it held back)."""

    text: str
    tokens: int = 1
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class End:
    tokens_in: int
    tokens_out: int
    finish_reason: str
    ttft_ms: float
    decode_time_ms: float


@dataclass(frozen=True, slots=True)
class Failed:
    """Terminal failure. `code` is an API-07 code (WORKER_RESET, ENGINE_ERROR, ...)."""

    code: str
    message: str
    retriable: bool
    before_first_token: bool
    engine_lost: bool = False


StreamEvent = Started | Token | End | Failed


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """`load_progress`: while loading, the fraction of the weights loaded (0..1) as the
    engine reports it; None when it cannot tell, and once it is ready."""

    state: HealthState
    message: str = ""
    slots_total: int = 0
    slots_busy: int = 0
    load_progress: float | None = None


@dataclass(frozen=True, slots=True)
class EngineProps:
    """What an engine says about itself (ADP-01 `props()`)."""

    engine: str
    engine_version: str
    ctx: int
    slots_total: int
    chat_template: bool
    features: frozenset[str] = field(default_factory=frozenset)
    model_path: str = ""
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class Tokenized:
    ids: tuple[int, ...]
    byte_offsets: tuple[int, ...] = ()
