"""The wire of our Triton engine model (`provisioners/engines/triton_llamacpp.py`) over
Triton's HTTP generate extension (§A5.1): request bodies and the stream decoder.

Request: `POST /v2/models/{name}/generate_stream` with the model's inputs as top-level
JSON keys: `text_input` or `messages` (JSON chat turns), `request_id`, `max_tokens` and
the sampling values that are set (`stop` as a list). Triton answers with SSE, one
`data: {...}` per model response, and no `[DONE]`: the model's own responses carry
`event` = `start` (`tokens_in`), `token` (`text_output`, `tokens`), `end` (`final`
true, `finish_reason`, `tokens_in`, `tokens_out`). Only `end` is success; EOF without
it is a truncation (the runner's WORKER_RESET).

Errors: a mid-stream `data: {"error": "<python traceback>"}` frame under HTTP 200. Its
last line is the exception; the model's deliberate refusals read
`RequestRefused: CODE: message` (INVALID_PARAMS, CONTEXT_OVERFLOW: not retriable), any
other error frame is ENGINE_ERROR (`http_errors.frame_failure`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from worker_adapters.http_errors import frame_failure
from worker_adapters.types import End, Failed, GenerateRequest, Started, StreamEvent, Token

__all__ = ["TritonDecoder", "generate_body"]

_REFUSAL = re.compile(r"^RequestRefused: (?P<code>[A-Z_]+): (?P<message>.*)$")
_REFUSAL_CODES = frozenset({"INVALID_PARAMS", "CONTEXT_OVERFLOW"})


def generate_body(request: GenerateRequest, engine_request_id: str) -> dict[str, Any]:
    """The generate_stream body. `engine_request_id` names this attempt at the engine."""
    sampling = request.sampling
    body: dict[str, Any] = {"id": engine_request_id, "request_id": engine_request_id}
    if request.messages is not None:
        turns = [{"role": turn.role, "content": turn.content} for turn in request.messages]
        body["messages"] = json.dumps(turns)
    else:
        body["text_input"] = request.prompt or ""
    optional = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "seed": sampling.seed,
    }
    body.update((name, value) for name, value in optional.items() if value is not None)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    return body


def error_frame_failure(error: str, *, tokens_seen: bool) -> Failed:
    """An error frame: the model's typed refusal, or an engine failure."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    refusal = _REFUSAL.match(last)
    if refusal and refusal["code"] in _REFUSAL_CODES:
        return Failed(refusal["code"], refusal["message"], False, not tokens_seen)
    return frame_failure(last, tokens_seen=tokens_seen)


class TritonDecoder:
    """Per stream: the model's responses to domain events, checked for order."""

    __slots__ = ("_started", "_tokens_seen")

    def __init__(self) -> None:
        self._started = False
        self._tokens_seen = False

    def feed(self, data: bytes) -> Sequence[StreamEvent]:
        try:
            frame = json.loads(data)
            if "error" in frame:
                return (error_frame_failure(str(frame["error"]), tokens_seen=self._tokens_seen),)
            return self._event(str(frame["event"]), frame)
        except (ValueError, TypeError, KeyError, AttributeError):
            return (self._malformed("unreadable frame"),)

    def _event(self, kind: str, frame: dict[str, Any]) -> Sequence[StreamEvent]:
        if kind == "start":
            if self._started:
                return (self._malformed("second start"),)
            self._started = True
            return (Started(int(frame["tokens_in"])),)
        if not self._started:
            return (self._malformed(f"{kind} before start"),)
        if kind == "token":
            text = str(frame["text_output"])
            if not text:
                return ()
            self._tokens_seen = True
            return (Token(text, max(1, int(frame["tokens"]))),)
        if kind == "end" and frame.get("final") is True:
            return (
                End(
                    tokens_in=int(frame["tokens_in"]),
                    tokens_out=int(frame["tokens_out"]),
                    finish_reason=str(frame["finish_reason"]) or "stop",
                    ttft_ms=0.0,
                    decode_time_ms=0.0,
                ),
            )
        return (self._malformed(f"unknown event {kind!r}"),)

    def _malformed(self, problem: str) -> Failed:
        message = f"malformed triton stream: {problem}"
        return Failed("ENGINE_ERROR", message, True, not self._tokens_seen)
