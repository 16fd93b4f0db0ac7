"""llama-server transcripts, reconstructed from the wire facts of the engine reference
(§A1.5). llama-server can be built and run on a test machine, so these stand in only
until the conformance suite runs against the real binary; none is a recording.

Native `/completion`: one frame per token, `{content, tokens, stop: false,
tokens_predicted, tokens_evaluated, ...}`, then a final frame with `stop: true` and
`stop_type`; no `[DONE]`. Errors before the first result are plain HTTP errors; a later
error is one `{"error": {code, message, type}}` frame, then the connection closes.
Chat (`/v1/chat/completions`): OpenAI chunks, a role-only first delta, a final empty
delta with `finish_reason`, a usage chunk, then `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker_adapters.testing.scenarios import (
    LONG_PACE_S,
    LONG_TOKENS,
    SAMPLE_TOKENS,
    UTF8_TOKENS,
    Scenario,
)
from worker_adapters.testing.transcripts import (
    DONE,
    Ending,
    Transcript,
    http_error,
    split_each_write,
    stream,
)

__all__ = ["PROMPT_TOKENS", "chat", "completion", "error_frame", "for_scenario"]

PROVENANCE = "reconstructed: llama-server wire facts, engine reference §A1.5"
PROMPT_TOKENS = 7


def _partial(text: str, index: int) -> dict[str, Any]:
    return {
        "index": 0,
        "content": text,
        "tokens": [],
        "stop": False,
        "id_slot": 0,
        "tokens_predicted": index + 1,
        "tokens_evaluated": PROMPT_TOKENS,
    }


def _final(predicted: int, stop_type: str) -> dict[str, Any]:
    timings = {"cache_n": 0, "prompt_n": PROMPT_TOKENS, "predicted_n": predicted}
    return {
        "index": 0,
        "content": "",
        "tokens": [],
        "id_slot": 0,
        "stop": True,
        "model": "fake",
        "tokens_predicted": predicted,
        "tokens_evaluated": PROMPT_TOKENS,
        "generation_settings": {},
        "prompt": "",
        "has_new_line": False,
        "truncated": False,
        "stop_type": stop_type,
        "stopping_word": "",
        "tokens_cached": PROMPT_TOKENS + predicted,
        "timings": timings,
    }


def error_frame(message: str = "Compute error.") -> dict[str, Any]:
    return {"error": {"code": 500, "message": message, "type": "server_error"}}


def completion(
    name: str,
    tokens: Sequence[str],
    *,
    stop_type: str | None = "limit",
    tail: Sequence[Any] = (),
    ending: Ending = "close",
    pace_s: float = 0.0,
) -> Transcript:
    """Native `/completion` frames; `stop_type=None` leaves out the final frame."""
    frames: list[Any] = [_partial(t, i) for i, t in enumerate(tokens)]
    if stop_type is not None:
        frames.append(_final(len(tokens), stop_type))
    return stream(name, PROVENANCE, [*frames, *tail], ending=ending, pace_s=pace_s)


def chat(name: str, tokens: Sequence[str], finish: str = "stop") -> Transcript:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    frames: list[Any] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    ]
    for text in tokens:
        delta = {"content": text}
        frames.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(tokens)}
    frames += [{**base, "choices": [], "usage": usage}, DONE]
    return stream(name, PROVENANCE, frames)


def for_scenario(scenario: Scenario) -> Transcript | None:
    """The transcript that makes the fake llama-server behave as `scenario` says."""
    name = f"reconstructed_llamacpp_{scenario.value}"
    tokens = SAMPLE_TOKENS
    match scenario:
        case Scenario.COMPLETES:
            return completion(name, tokens)
        case Scenario.CHAT:
            return chat(name, tokens)
        case Scenario.UTF8:
            return split_each_write(completion(name, UTF8_TOKENS))
        case Scenario.LONG:
            return completion(name, ["tok "] * LONG_TOKENS, pace_s=LONG_PACE_S)
        case Scenario.ERROR_BEFORE_FIRST:
            return http_error(name, PROVENANCE, 500, error_frame("Invalid input batch."))
        case Scenario.ERROR_MID_STREAM:
            return completion(name, tokens[:2], stop_type=None, tail=[error_frame()])
        case Scenario.REJECTED:
            error = {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
            return http_error(name, PROVENANCE, 400, {"error": error})
        case Scenario.TRUNCATED:
            return completion(name, tokens[:2], stop_type=None)
        case Scenario.STALL:
            return completion(name, tokens[:2], stop_type=None, ending="ping")
    return None
