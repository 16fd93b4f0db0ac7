"""llama-server's native wire (§A1.4, §A1.5): `/completion` bodies and stream chunks.

Chunks: `{content, tokens, stop: false, tokens_predicted, tokens_evaluated, ...}` while
generating; the last has `stop: true` with `stop_type` (`eos` | `word` | `limit` |
`none`), `tokens_predicted`, `tokens_evaluated` and `timings`. No `[DONE]` follows on
this route: `stop: true` is the terminal marker. An error after the first result is one
`{"error": {code, message, type}}` frame, then the connection closes; errors before it
are plain HTTP errors (PR #16486), handled by `http_errors`.

`content` is text: llama-server holds back an incomplete UTF-8 character until it is
whole, so no byte reassembly is needed here (the network chunk split is `_sse`'s job).
Sampling maps one to one (llama.cpp names: `n_predict`, `repeat_penalty`, `min_p`,
`grammar` as GBNF, `json_schema` as an object); logprobs (`n_probs`) are asked and read
in the adapter (`_logprobs`), not here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from worker_adapters._http import error_from_body
from worker_adapters.http_errors import frame_failure
from worker_adapters.types import End, Failed, Sampling, Started, StreamEvent, Token

__all__ = ["LlamaNativeDecoder", "native_sampling", "pieces_to_offsets"]

_STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length", "none": "stop"}


def native_sampling(sampling: Sampling, schema: Any = None) -> dict[str, Any]:
    """The sampling fields of a `/completion` (or llama-server chat) body."""
    body: dict[str, Any] = {"n_predict": sampling.max_tokens}
    pairs = (
        ("temperature", sampling.temperature),
        ("top_k", sampling.top_k),
        ("top_p", sampling.top_p),
        ("min_p", sampling.min_p),
        ("repeat_penalty", sampling.repeat_penalty),
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
        ("seed", sampling.seed),
        ("grammar", sampling.grammar),
    )
    body.update((name, value) for name, value in pairs if value is not None)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if schema is not None:
        body["json_schema"] = schema
    return body


def pieces_to_offsets(tokens: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    """Byte offsets from `/tokenize?with_pieces` (a piece is text, or a byte list when it
    is not valid UTF-8 on its own)."""
    offsets: list[int] = []
    position = 0
    for token in tokens:
        offsets.append(position)
        piece = token.get("piece", "")
        position += len(piece) if isinstance(piece, list) else len(str(piece).encode())
    return tuple(offsets)


class LlamaNativeDecoder:
    """Per stream: native `/completion` chunks to domain events."""

    __slots__ = ("_started", "_tokens")

    def __init__(self) -> None:
        self._started = False
        self._tokens = 0

    def feed(self, data: bytes) -> Sequence[StreamEvent]:
        try:
            chunk = json.loads(data)
            error = chunk.get("error")
        except (ValueError, AttributeError):
            return (Failed("ENGINE_ERROR", "malformed stream frame", True, not self._tokens),)
        if error is not None:
            message = error_from_body(200, chunk).message
            return (frame_failure(message, tokens_seen=self._tokens > 0),)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            cached = (chunk.get("timings") or {}).get("cache_n") or 0
            events.append(Started(int(chunk.get("tokens_evaluated") or 0), int(cached)))
        content = chunk.get("content")
        if content:
            self._tokens += 1
            events.append(Token(content))
        if chunk.get("stop"):
            events.append(self._end(chunk))
        return events

    def _end(self, chunk: dict[str, Any]) -> End:
        return End(
            tokens_in=int(chunk.get("tokens_evaluated") or 0),
            tokens_out=int(chunk.get("tokens_predicted") or self._tokens),
            finish_reason=_STOP_TYPES.get(str(chunk.get("stop_type", "none")), "stop"),
            ttft_ms=0.0,
            decode_time_ms=0.0,
        )
