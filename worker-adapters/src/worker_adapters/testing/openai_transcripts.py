"""OpenAI-compatible transcripts shaped like llama_cpp.server (engine reference §A2.2),
reconstructed from the documented wire facts; none is a recording. (TGI's recorded
OpenAI-route streams are in `tgi_transcripts`.)

Completion chunks carry `choices[0].text` with `finish_reason: null` until the last
(`text: ""`, `finish_reason` `stop`|`length`); chat chunks start with a role-only delta
and end with an empty delta and the finish reason; then `data: [DONE]`. Stream chunks
of llama_cpp.server carry no usage. A request interrupted by another
(`interrupt_requests`) ends with `[DONE]` and no finish reason.
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

__all__ = ["chunks", "for_scenario", "openai_error"]

PROVENANCE = "reconstructed: llama_cpp.server wire facts, engine reference §A2.2"


def chunks(
    tokens: Sequence[str],
    *,
    chat: bool,
    finish: str | None = "length",
    extra: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """OpenAI stream chunks for `tokens`; `finish=None` leaves out the final chunk;
    `usage` set adds it to every chunk (vLLM's continuous usage) from `prompt_tokens`."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": "cmpl-1", "object": kind, "created": 1, "model": "fake-model"}
    out: list[dict[str, Any]] = []

    def choice(text: str | None, reason: str | None) -> dict[str, Any]:
        if chat:
            delta = {"content": text} if text is not None else {}
            return {"index": 0, "delta": delta, "finish_reason": reason, **(extra or {})}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}

    def chunk(text: str | None, reason: str | None, produced: int) -> dict[str, Any]:
        frame = {**base, "choices": [choice(text, reason)]}
        if usage is not None:
            prompt = usage["prompt_tokens"]
            frame["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": produced,
                "total_tokens": prompt + produced,
            }
        return frame

    if chat:
        out.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    out += [chunk(text, None, i + 1) for i, text in enumerate(tokens)]
    if finish is not None:
        out.append(chunk(None if chat else "", finish, len(tokens)))
    return out


def openai_error(message: str, kind: str = "server_error", code: int = 500) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _stream(name: str, frames: list[Any], ending: Ending = "close", pace: float = 0) -> Transcript:
    return stream(name, PROVENANCE, frames, ending=ending, pace_s=pace)


def for_scenario(scenario: Scenario) -> Transcript | None:
    """The transcript that makes the fake OpenAI server behave as `scenario` says."""
    name = f"reconstructed_openai_{scenario.value}"
    tokens = SAMPLE_TOKENS
    match scenario:
        case Scenario.COMPLETES:
            return _stream(name, [*chunks(tokens, chat=False), DONE])
        case Scenario.CHAT:
            return _stream(name, [*chunks(tokens, chat=True, finish="stop"), DONE])
        case Scenario.UTF8:
            return split_each_write(_stream(name, [*chunks(UTF8_TOKENS, chat=False), DONE]))
        case Scenario.LONG:
            return _stream(
                name, [*chunks(["tok "] * LONG_TOKENS, chat=False), DONE], pace=LONG_PACE_S
            )
        case Scenario.ERROR_BEFORE_FIRST:
            return http_error(name, PROVENANCE, 500, openai_error("model failed to evaluate"))
        case Scenario.ERROR_MID_STREAM:
            frames = [*chunks(tokens[:2], chat=False, finish=None), openai_error("decode failed")]
            return _stream(name, frames)
        case Scenario.REJECTED:
            body = {"detail": [{"type": "value_error", "msg": "temperature must be >= 0"}]}
            return http_error(name, PROVENANCE, 422, body)
        case Scenario.TRUNCATED:
            return _stream(name, chunks(tokens[:2], chat=False, finish=None))
        case Scenario.STALL:
            return _stream(name, chunks(tokens[:2], chat=False, finish=None), ending="ping")
    return None
