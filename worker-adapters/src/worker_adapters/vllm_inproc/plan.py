"""The pure pieces of the in-process vLLM engine (WRK-03): no vLLM import here, so the
project's own venv (which has no vLLM) type-checks and unit-tests them.

- `sampling_args`: the `vllm.SamplingParams` keyword arguments of one request's
  `Sampling`: every parameter the capability matrix says `vllm-inproc` honours lands
  here, under vLLM's name (`repeat_penalty` is `repetition_penalty`; a grammar or a
  JSON schema is a `StructuredOutputsParams` of vLLM's, given as `structured`; so are
  tools (API-17), as the GBNF of their calls, `tools.tool_grammar`, made with the
  JSON-schema converter the caller gives: xgrammar's in the worker). A parameter the
  request leaves unset is left to vLLM's default.
- `token_logprobs`: one generated token's `TokenLogprob` from vLLM's per-position map
  `{token id: Logprob(logprob, rank, decoded_token)}` (the sampled token, and the top N).
- `DeltaAssembler`: vLLM's `DELTA` outputs into `Token` events. vLLM holds back the text
  of a token that ends inside a UTF-8 character (its detokenizer emits it with the token
  that completes it), so an output may carry token ids and no text: those tokens (and
  their logprobs) are counted into the next event that has text.
- `check_prompt`: the refusals that come before the engine sees a request.
- `kv_cache_bytes`: the KV cache the engine asks for, from the folder's `config.json`
  (the same rule as the `vllm` server kind's pools: ctx × slots tokens in float32).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker_adapters.tools import tool_grammar
from worker_adapters.types import Sampling, Token, TokenLogprob, TopLogprob

__all__ = [
    "MIN_KV_CACHE_BYTES",
    "DeltaAssembler",
    "VllmLogprob",
    "check_prompt",
    "kv_cache_bytes",
    "sampling_args",
    "token_logprobs",
]

_MIB = 1 << 20
MIN_KV_CACHE_BYTES = 16 * _MIB

# Sampling field -> SamplingParams keyword (where the names differ).
_RENAMED = {"repeat_penalty": "repetition_penalty"}
_PLAIN = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def sampling_args(
    sampling: Sampling, convert: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """SamplingParams keywords for `sampling` (see module doc). `structured`, when
    present, is the keywords of a `StructuredOutputsParams` (`grammar` or `json`).
    `convert` turns a JSON schema (text) into GBNF, for tools; ValueError when tools
    are to be constrained and there is none or it cannot convert their schemas."""
    args: dict[str, Any] = {"max_tokens": sampling.max_tokens}
    for name in _PLAIN:
        value = getattr(sampling, name)
        if value is not None:
            args[_RENAMED.get(name, name)] = value
    if sampling.stop:
        args["stop"] = list(sampling.stop)
    if sampling.logprobs is not None:
        args["logprobs"] = sampling.logprobs
    if sampling.tools is not None and sampling.tool_choice != "none":
        if convert is None:
            raise ValueError("tools: no JSON-schema converter to constrain the calls with")
        grammar = tool_grammar(
            sampling.tools, sampling.tool_choice, sampling.parallel_tool_calls, convert
        )
        args["structured"] = {"grammar": grammar}
    elif sampling.grammar is not None:
        args["structured"] = {"grammar": sampling.grammar}
    elif sampling.json_schema is not None:
        args["structured"] = {"json": sampling.json_schema}
    return args


class VllmLogprob(Protocol):
    """What vLLM's `Logprob` holds for one candidate token."""

    logprob: float
    rank: int | None
    decoded_token: str | None


def token_logprobs(sampled: int, candidates: Mapping[int, VllmLogprob], top_n: int) -> TokenLogprob:
    """The sampled token's logprob and its position's `top_n` most likely alternatives
    (by vLLM's rank), from vLLM's map for that position (see module doc)."""
    chosen = candidates.get(sampled)
    if chosen is None:
        raise ValueError(f"vLLM reported no logprob for the sampled token {sampled}")
    ranked = sorted(
        candidates.items(), key=lambda item: (item[1].rank or 0, -item[1].logprob, item[0])
    )
    top = tuple(_top(entry) for _, entry in ranked[:top_n])
    text = chosen.decoded_token or ""
    return TokenLogprob(text, float(chosen.logprob), text.encode(), top)


def _top(entry: VllmLogprob) -> TopLogprob:
    text = entry.decoded_token or ""
    return TopLogprob(text, float(entry.logprob), text.encode())


@dataclass(slots=True)
class DeltaAssembler:
    """vLLM's delta outputs of one request into `Token` events (see module doc)."""

    produced: int = 0  # engine tokens so far
    _pending: int = 0  # tokens whose text has not been sent yet
    _scored: list[TokenLogprob] = field(default_factory=list)

    def feed(self, text: str, tokens: int, logprobs: Sequence[TokenLogprob] = ()) -> Token | None:
        """One output's delta: its text, how many engine tokens it carries, their
        logprobs (when asked). A `Token` when there is text to send, else None."""
        self.produced += tokens
        self._pending += tokens
        self._scored.extend(logprobs)
        if not text:
            return None
        token = Token(text, self._pending, tuple(self._scored))
        self._pending = 0
        self._scored.clear()
        return token


def check_prompt(prompt_tokens: int, max_tokens: int, ctx: int) -> tuple[str, str] | None:
    """(code, message) when the request cannot run in a context of `ctx` tokens: an
    empty prompt is INVALID_PARAMS, one that leaves no room for `max_tokens` is
    CONTEXT_OVERFLOW (vLLM would refuse it too, untyped); None when it fits."""
    if prompt_tokens == 0:
        return "INVALID_PARAMS", "the prompt is empty (no tokens to start from)"
    if prompt_tokens + max_tokens > ctx:
        return (
            "CONTEXT_OVERFLOW",
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) "
            f"exceeds the context of {ctx} tokens",
        )
    return None


def kv_cache_bytes(config: Mapping[str, Any], ctx: int, slots: int) -> int:
    """ctx × slots tokens of the model's float32 KV bytes per token (its Hugging Face
    `config.json`: layers × KV heads × head size × 2 × 4), rounded up to whole MiB, at
    least 16 MiB (without a size the CPU build asks for 90 % of the host's memory).
    ValueError naming a missing field."""
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"config.json does not give the KV cache's size: {exc!r}") from exc
    needed = layers * kv_heads * head_dim * 2 * 4 * ctx * slots
    return max(MIN_KV_CACHE_BYTES, -(-needed // _MIB) * _MIB)
