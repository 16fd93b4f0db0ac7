"""vLLM transcripts, reconstructed from the wire facts of the engine reference (§A3.4).

vLLM cannot run on the test machines and no recording of its wire exists here, so
these are reconstructions, named `reconstructed_vllm_*`; they are not recordings.

Facts they follow: frames are `data: <CompletionStreamResponse>\\n\\n`, then
`data: [DONE]\\n\\n`; chunks carry `choices[{index, text, logprobs, finish_reason,
stop_reason}]` and, with `continuous_usage_stats`, `usage` on every chunk; with
`include_usage` one last chunk has `choices: []` and the totals; `finish_reason` is
`stop`, `length` or `abort`. An error during the stream is one frame
`{"error": {message, type, param, code}}` (older builds add `"object": "error"`) and
then `data: [DONE]` anyway. Errors before the stream are HTTP errors with the same
body (new) or the flat `{"object": "error", ...}` body (old).
"""

from __future__ import annotations

from typing import Any

from worker_adapters.testing.openai_transcripts import chunks
from worker_adapters.testing.scenarios import (
    LONG_PACE_S,
    LONG_TOKENS,
    SAMPLE_TOKENS,
    UTF8_TOKENS,
    Scenario,
)
from worker_adapters.testing.transcripts import (
    DONE,
    Transcript,
    http_error,
    split_each_write,
    stream,
)

__all__ = [
    "PROMPT_TOKENS",
    "for_scenario",
    "reconstructed_vllm_abort",
    "reconstructed_vllm_error_then_done",
    "reconstructed_vllm_flat_error_before_stream",
    "vllm_error",
]

PROVENANCE = "reconstructed: vLLM wire facts, engine reference §A3.4 (no recording exists)"
PROMPT_TOKENS = 5
_USAGE = {"prompt_tokens": PROMPT_TOKENS}


def vllm_error(message: str, *, old: bool = False) -> dict[str, Any]:
    error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
    return {"error": {"object": "error", **error} if old else error}


def _usage_chunk(produced: int) -> dict[str, Any]:
    totals = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": produced}
    return {"id": "cmpl-1", "object": "text_completion", "choices": [], "usage": totals}


def _complete(
    tokens: tuple[str, ...] | list[str], *, chat: bool = False, finish: str = "length"
) -> list[Any]:
    frames = chunks(tokens, chat=chat, finish=finish, usage=_USAGE)
    return [*frames, _usage_chunk(len(tokens)), DONE]


def reconstructed_vllm_error_then_done(*, old: bool = False) -> Transcript:
    """Tokens, an error frame, then `[DONE]`: a failure, whatever `[DONE]` suggests."""
    frames: list[Any] = [*chunks(SAMPLE_TOKENS[:2], chat=False, finish=None, usage=_USAGE)]
    frames += [vllm_error("engine step failed", old=old), DONE]
    suffix = "_old_shape" if old else ""
    return stream(f"reconstructed_vllm_error_then_done{suffix}", PROVENANCE, frames)


def reconstructed_vllm_abort() -> Transcript:
    """`finish_reason: abort` (the request was aborted inside the engine), then `[DONE]`."""
    return stream(
        "reconstructed_vllm_abort", PROVENANCE, _complete(SAMPLE_TOKENS[:2], finish="abort")
    )


def reconstructed_vllm_flat_error_before_stream() -> Transcript:
    body = {
        "object": "error",
        "message": "This model's maximum context length is 8192 tokens. However, you "
        "requested 9000 tokens (8000 in the messages, 1000 in the completion).",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    return http_error("reconstructed_vllm_flat_error_before_stream", PROVENANCE, 400, body)


def for_scenario(scenario: Scenario) -> Transcript | None:
    """The transcript that makes the fake vLLM behave as `scenario` says."""
    name = f"reconstructed_vllm_{scenario.value}"
    match scenario:
        case Scenario.COMPLETES:
            return stream(name, PROVENANCE, _complete(SAMPLE_TOKENS))
        case Scenario.CHAT:
            return stream(name, PROVENANCE, _complete(SAMPLE_TOKENS, chat=True, finish="stop"))
        case Scenario.UTF8:
            return split_each_write(stream(name, PROVENANCE, _complete(UTF8_TOKENS)))
        case Scenario.LONG:
            frames = _complete(["tok "] * LONG_TOKENS)
            return stream(name, PROVENANCE, frames, pace_s=LONG_PACE_S)
        case Scenario.ERROR_BEFORE_FIRST:
            body = {"error": {"message": "EngineCore died", "type": "InternalServerError"}}
            return http_error(name, PROVENANCE, 500, body)
        case Scenario.ERROR_MID_STREAM:
            return reconstructed_vllm_error_then_done()
        case Scenario.REJECTED:
            return reconstructed_vllm_flat_error_before_stream()
        case Scenario.TRUNCATED:
            frames = chunks(SAMPLE_TOKENS[:2], chat=False, finish=None, usage=_USAGE)
            return stream(name, PROVENANCE, frames)
        case Scenario.STALL:
            frames = chunks(SAMPLE_TOKENS[:2], chat=False, finish=None, usage=_USAGE)
            return stream(name, PROVENANCE, frames, ending="hang")
    return None
