"""The capability matrix (API-16): which request parameters each engine kind honours, per
workload. One pure table, the single source for the adapters' request mapping (each maps
exactly what its row honours), the refusal of anything else with `UNSUPPORTED_PARAM`
naming the parameter (the orchestrator's placement check `params` at admission, and
each adapter again before it calls its engine), the capabilities endpoint and the
generated table in `docs/capabilities.md` (`ci/gen-capabilities-doc`).

Parameters are named as in `/v2/tasks` (the OpenAI facade maps its fields onto them:
`response_format` is `json_schema`, `top_logprobs` is `logprobs`). A parameter a row
does not list is refused, with the reason from `REFUSALS` (or the row's default) as
data. `tools` and `tool_choice` (API-17, OpenAI facade only) are honoured on chat by
llama-server, vLLM (server and in process) and the in-process llama.cpp engine, all
through llorch's own presentation (the tools described in a system message, the answer
constrained by a GBNF grammar made of the tools' schemas: `worker_adapters.tools`;
vLLM takes it through its structured outputs); every other row refuses them with its
reason. No engine kind honours `logit_bias` (llorch does not carry it to engines).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from worker_adapters.types import Failed, GenerateRequest, Sampling

__all__ = [
    "ENGINES",
    "PARAMS",
    "WORKLOADS",
    "EngineCapabilities",
    "features",
    "honoured",
    "refusal",
    "refusal_reason",
    "requested_params",
    "unsupported_params",
]

WORKLOADS = ("completion", "chat", "embedding")

# Every engine-dependent parameter, with what it asks for (the docs' table says it).
PARAMS: Mapping[str, str] = {
    "max_tokens": "at most this many tokens are generated",
    "temperature": "sampling temperature",
    "top_k": "sample among the k most likely tokens",
    "top_p": "nucleus sampling",
    "min_p": "drop tokens below min_p times the most likely one's probability",
    "repeat_penalty": "llama.cpp's repetition penalty (vLLM/TGI `repetition_penalty`)",
    "presence_penalty": "OpenAI's presence penalty",
    "frequency_penalty": "OpenAI's frequency penalty",
    "seed": "the sampler's seed",
    "stop": "stop strings",
    "logprobs": "each token's log-probability and the top alternatives",
    "grammar": "a GBNF grammar constrains the output",
    "json_schema": "a JSON schema constrains the output",
    "logit_bias": "per-token biases",
    "tools": "tool definitions the model may call",
    "tool_choice": "whether and which tool the model must call",
}

_SAMPLING = frozenset(
    {
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
    }
)
_OPENAI_STANDARD = frozenset(
    {"max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop"}
)
_TOOLS = frozenset({"tools", "tool_choice"})
_NOT_CARRIED = "llorch does not carry it to engines yet"
_TOOLS_CHAT_ONLY = "tool calling is a chat feature"


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """One engine kind's row: the parameters it honours per generating workload (a
    workload not listed is not served; `embedding` is listed where every pool of the
    kind serves it, elsewhere a pool's configuration decides), why the others are
    refused, and the adapter kind that speaks to it."""

    adapter: str
    honours: Mapping[str, frozenset[str]]
    refusals: Mapping[str, str] = field(default_factory=dict)
    default_refusal: str = "the engine has no such parameter"


ENGINES: Mapping[str, EngineCapabilities] = {
    "llamacpp-inproc": EngineCapabilities(
        adapter="native",
        honours={
            "completion": _SAMPLING | {"logprobs", "grammar", "json_schema"},
            "chat": _SAMPLING | {"logprobs", "grammar", "json_schema"} | _TOOLS,
        },
        refusals={"tools": _TOOLS_CHAT_ONLY, "tool_choice": _TOOLS_CHAT_ONLY},
    ),
    "mock": EngineCapabilities(
        adapter="native",
        honours={
            "completion": frozenset({"max_tokens", "seed"}),
            "chat": frozenset({"max_tokens", "seed"}),
            "embedding": frozenset(),
        },
        default_refusal="the mock engine runs no model: nothing to sample or constrain",
    ),
    "llamacpp": EngineCapabilities(
        adapter="llamacpp",
        honours={
            "completion": _SAMPLING | {"logprobs", "grammar", "json_schema"},
            "chat": _SAMPLING | {"logprobs", "grammar", "json_schema"} | _TOOLS,
        },
        refusals={"tools": _TOOLS_CHAT_ONLY, "tool_choice": _TOOLS_CHAT_ONLY},
    ),
    "llamacpp-server-py": EngineCapabilities(
        adapter="llamacpp-server-py",
        honours={
            "completion": _SAMPLING | {"logprobs", "grammar", "json_schema"},
            "chat": _SAMPLING | {"logprobs", "grammar", "json_schema"},
        },
        refusals={
            "tools": "llama_cpp.server calls tools only in a function-calling chat format "
            "llorch does not start it with",
            "tool_choice": "llama_cpp.server calls tools only in a function-calling chat "
            "format llorch does not start it with",
        },
    ),
    "openai-compatible": EngineCapabilities(
        adapter="openai",
        honours={
            "completion": _OPENAI_STANDARD | {"logprobs"},
            "chat": _OPENAI_STANDARD | {"logprobs", "json_schema"},
        },
        refusals={
            "top_k": "not an OpenAI field: a generic server may ignore it",
            "min_p": "not an OpenAI field: a generic server may ignore it",
            "repeat_penalty": "not an OpenAI field: a generic server may ignore it",
            "grammar": "not an OpenAI field: a generic server may run unconstrained",
            "json_schema": "OpenAI's completions route takes no response format (chat only)",
            "tools": "a generic server may ignore tools or call them its own way: not a "
            "pass-through llorch can vouch for",
            "tool_choice": "a generic server may ignore tools or call them its own way: not "
            "a pass-through llorch can vouch for",
        },
    ),
    "vllm": EngineCapabilities(
        adapter="vllm",
        honours={
            "completion": _SAMPLING | {"logprobs", "grammar", "json_schema"},
            "chat": _SAMPLING | {"logprobs", "grammar", "json_schema"} | _TOOLS,
        },
        refusals={"tools": _TOOLS_CHAT_ONLY, "tool_choice": _TOOLS_CHAT_ONLY},
    ),
    # vLLM's AsyncLLM in the worker process (WRK-03): vLLM's own sampler, stop strings,
    # logprobs and structured outputs (xgrammar: GBNF grammars and JSON schemas; the
    # tools' grammar made with xgrammar's JSON-schema converter).
    "vllm-inproc": EngineCapabilities(
        adapter="native",
        honours={
            "completion": _SAMPLING | {"logprobs", "grammar", "json_schema"},
            "chat": _SAMPLING | {"logprobs", "grammar", "json_schema"} | _TOOLS,
        },
        refusals={"tools": _TOOLS_CHAT_ONLY, "tool_choice": _TOOLS_CHAT_ONLY},
    ),
    "tgi": EngineCapabilities(
        adapter="tgi",
        honours={
            "completion": (_SAMPLING - {"min_p", "presence_penalty"}) | {"logprobs", "json_schema"},
            "chat": (_OPENAI_STANDARD - {"presence_penalty"}) | {"logprobs", "json_schema"},
        },
        refusals={
            "grammar": "TGI takes JSON schemas and regexes, not GBNF",
            "presence_penalty": "TGI has none on /generate_stream; its chat route turns it "
            "into repetition_penalty = value + 2, not OpenAI's penalty",
            "tools": "TGI calls tools in its own shape (a `tool_call` grammar with its "
            "`notify_error` tool); llorch does not map it",
            "tool_choice": "TGI calls tools in its own shape (a `tool_call` grammar with its "
            "`notify_error` tool); llorch does not map it",
        },
        default_refusal="TGI has no such parameter on this route",
    ),
    "triton": EngineCapabilities(
        adapter="triton",
        honours={"completion": _SAMPLING, "chat": _SAMPLING},
        default_refusal="llorch's Triton engine model has no such input",
    ),
}
_ALWAYS_REFUSED = {"logit_bias": _NOT_CARRIED}


def honoured(engine: str, workload: str) -> frozenset[str]:
    """The parameters `engine` honours on `workload` (empty for an unknown engine kind
    or a workload it does not serve: fail closed)."""
    row = ENGINES.get(engine)
    return row.honours.get(workload, frozenset()) if row is not None else frozenset()


def features(engine: str) -> tuple[str, ...]:
    """What a pool of `engine` reports as its features: the workloads it serves and the
    constraints and logprobs it honours on any of them."""
    row = ENGINES[engine]
    served = [w for w in WORKLOADS if w in row.honours]
    on_any = frozenset().union(*row.honours.values())
    return (*served, *(f for f in ("grammar", "json_schema", "logprobs") if f in on_any))


def unsupported_params(engine: str, workload: str, params: Iterable[str]) -> tuple[str, ...]:
    """The parameters of `params` that `engine` does not honour on `workload`, sorted."""
    return tuple(sorted(set(params) - honoured(engine, workload)))


def refusal_reason(engine: str, param: str) -> str:
    """Why `engine` refuses `param` (data for the error and the docs)."""
    row = ENGINES.get(engine)
    if row is None:
        return f"engine kind {engine!r} is not in the capability matrix"
    if param in row.refusals:
        return row.refusals[param]
    return _ALWAYS_REFUSED.get(param, row.default_refusal)


def requested_params(sampling: Sampling) -> frozenset[str]:
    """The parameters a request sets: `max_tokens` always, the rest when given."""
    wanted = {"max_tokens"}
    for name in PARAMS:
        value = getattr(sampling, name, None)
        if value is not None and value != ():
            wanted.add(name)
    return frozenset(wanted)


def workload_of(request: GenerateRequest) -> str:
    return "chat" if request.messages is not None else "completion"


def refusal(engine: str, request: GenerateRequest) -> Failed | None:
    """The adapters' own check before they call the engine: a `Failed` UNSUPPORTED_PARAM
    (before the first token, not retriable) naming the first parameter `engine` does
    not honour, or None."""
    workload = workload_of(request)
    wanted = requested_params(request.sampling)
    if any(turn.tool_calls or turn.role == "tool" for turn in request.messages or ()):
        wanted |= {"tools"}  # tool turns: only an engine with tools can render them
    missing = unsupported_params(engine, workload, wanted)
    if not missing:
        return None
    param = missing[0]
    message = (
        f"{param}: engine {engine!r} does not honour it on {workload} "
        f"({refusal_reason(engine, param)})"
    )
    return Failed("UNSUPPORTED_PARAM", message, False, True)
