"""TGI's `/generate_stream` wire (§A4.2): request parameters and the event decoder.

Events: `{"index", "token": {"id", "text", "logprob", "special"}, "generated_text":
null, "details": null}` per token; the last one also carries `generated_text` and,
with `parameters.details`, `details.{finish_reason, generated_tokens, seed,
input_length}`; there is no `[DONE]`. The text of special tokens (EOS) is not output
text (TGI leaves it out of `generated_text` too). TGI answers 200 before validating, so
every error, validation and overload included, is a `{"error", "error_type"}` frame:
`validation` is INVALID_PARAMS (CONTEXT_OVERFLOW when the input is too long),
`overloaded` NO_CAPACITY (retriable), anything else ENGINE_ERROR.

Parameter limits TGI enforces, handled here so a valid request never fails there:
`temperature` must be > 0 (0 means greedy: `do_sample=false`), `top_p` in (0, 1)
(1 keeps every token, TGI's default: not sent; 0 keeps only the most likely: greedy,
`do_sample=false`). `min_p`, `presence_penalty` and a GBNF `grammar` cannot be expressed
here: the capability matrix refuses them before this is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from worker_adapters._openai_wire import normalize_finish
from worker_adapters.http_errors import frame_failure, is_context_overflow
from worker_adapters.types import End, Failed, Sampling, Started, StreamEvent, Token

__all__ = ["TgiDecoder", "generate_parameters"]


def generate_parameters(sampling: Sampling, schema: Any = None) -> dict[str, Any]:
    """`parameters` of a `/generate_stream` body."""
    params: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "details": True}
    temperature = sampling.temperature
    if temperature is not None and temperature <= 0:
        params["do_sample"] = False
    elif temperature is not None:
        params.update(temperature=temperature, do_sample=True)
    if sampling.top_p is not None and 0 < sampling.top_p < 1:
        params["top_p"] = sampling.top_p
    elif sampling.top_p is not None and sampling.top_p <= 0:
        params["do_sample"] = False
    pairs = (
        ("top_k", sampling.top_k),
        ("repetition_penalty", sampling.repeat_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
        ("seed", sampling.seed),
    )
    params.update((name, value) for name, value in pairs if value is not None)
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    if schema is not None:
        params["grammar"] = {"type": "json", "value": schema}
    return params


def error_frame_failure(error_type: str, message: str, *, tokens_seen: bool) -> Failed:
    if error_type == "validation":
        code = "CONTEXT_OVERFLOW" if is_context_overflow("", message) else "INVALID_PARAMS"
        return Failed(code, message, False, not tokens_seen)
    if error_type == "overloaded":
        return Failed("NO_CAPACITY", f"engine overloaded: {message}", True, not tokens_seen)
    return frame_failure(f"{error_type}: {message}", tokens_seen=tokens_seen)


class TgiDecoder:
    """Per stream: `/generate_stream` events to domain events."""

    __slots__ = ("_started", "_tokens")

    def __init__(self) -> None:
        self._started = False
        self._tokens = 0

    def feed(self, data: bytes) -> Sequence[StreamEvent]:
        try:
            event = json.loads(data)
            token = event.get("token") if "error" not in event else None
        except (ValueError, AttributeError):
            return (Failed("ENGINE_ERROR", "malformed stream frame", True, not self._tokens),)
        if "error" in event:
            error_type, message = str(event.get("error_type", "")), str(event["error"])
            return (error_frame_failure(error_type, message, tokens_seen=self._tokens > 0),)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(Started(0))
        if token is not None:
            self._tokens += 1
            text = token.get("text")
            if text and not token.get("special"):
                events.append(Token(text))
        if event.get("generated_text") is not None:
            events.append(self._end(event.get("details") or {}))
        return events

    def _end(self, details: dict[str, Any]) -> End:
        return End(
            tokens_in=int(details.get("input_length") or 0),
            tokens_out=int(details.get("generated_tokens") or self._tokens),
            finish_reason=normalize_finish(str(details.get("finish_reason") or "stop")),
            ttft_ms=0.0,
            decode_time_ms=0.0,
        )
