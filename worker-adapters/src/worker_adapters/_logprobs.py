"""Logprobs over HTTP engines: how to ask for them and how to read them (API-13, ADP-02).

Asking (only when `Sampling.logprobs` is set; nothing changes otherwise):

    wire                              request fields
    OpenAI chat (any server)          logprobs: true, top_logprobs: N
    OpenAI completions                logprobs: N
    llama-server /completion          n_probs: max(N, 1)
    llama-server chat                 logprobs: true, top_logprobs: max(N, 1)
    TGI /generate_stream              details: true, top_n_tokens: N (N > 0)

llama-server sends no probabilities at all for `n_probs: 0`, so at least one is asked
and the list is cut to N here. Its values are pre-sampling (`post_sampling_probs` is
left off), like OpenAI's and ours.

Reading: `LogprobsDecoder` wraps a stream's own decoder. It leaves that decoder's
events as they are and attaches to each `Token` the logprobs read from the same frame
(plus any from earlier frames whose text the engine held back). The frame is parsed a
second time for this, which only requests that asked for logprobs pay. A stream whose
first token arrives with no logprobs fails closed (ENGINE_ERROR, before the first
token): the engine ignored the request, and silently missing logprobs are no answer.

Shapes read, per frame:
- OpenAI chat and llama-server OAI routes: `choices[0].logprobs.content[]` of
  `{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`;
- OpenAI legacy completions (vLLM): `choices[0].logprobs` of `{tokens, token_logprobs,
  top_logprobs: [{text: logprob}]}`;
- llama-server native: `completion_probabilities[]` of `{id, token, bytes, logprob,
  top_logprobs: [...]}`;
- TGI: `token {text, logprob, special}` with `top_tokens [{text, logprob, special}]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from worker_adapters._relay import FrameDecoder
from worker_adapters.types import Failed, Sampling, StreamEvent, Token, TokenLogprob, TopLogprob

__all__ = [
    "LogprobsDecoder",
    "llama_native_logprobs",
    "openai_logprobs",
    "request_openai_logprobs",
    "tgi_logprobs",
]

Extract = Callable[[Any], list[TokenLogprob]]


def request_openai_logprobs(body: dict[str, Any], sampling: Sampling, *, chat: bool) -> None:
    """Add the OpenAI logprobs fields to `body` when the request asks for logprobs."""
    if sampling.logprobs is None:
        return
    if chat:
        body["logprobs"] = True
        body["top_logprobs"] = sampling.logprobs
    else:
        body["logprobs"] = sampling.logprobs


class LogprobsDecoder:
    """Wraps a stream decoder; attaches each frame's logprobs to its `Token` event."""

    __slots__ = ("_extract", "_held", "_inner", "_seen", "_top_n")

    def __init__(self, inner: FrameDecoder, extract: Extract, top_n: int) -> None:
        self._inner = inner
        self._extract = extract
        self._top_n = top_n
        self._held: list[TokenLogprob] = []
        self._seen = False

    def feed(self, data: bytes) -> Sequence[StreamEvent]:
        events = self._inner.feed(data)
        try:
            found = self._extract(json.loads(data))
        except (ValueError, TypeError, KeyError, AttributeError):
            found = []  # not JSON ([DONE]) or not a frame with logprobs
        self._held.extend(_cut(entry, self._top_n) for entry in found)
        if not any(type(event) is Token for event in events):
            return events
        if not self._held and not self._seen:
            message = "the engine returned no logprobs although they were requested"
            return (Failed("ENGINE_ERROR", message, False, True),)
        self._seen = True
        out: list[StreamEvent] = []
        for event in events:
            if type(event) is Token and self._held:
                assert isinstance(event, Token)
                event = Token(event.text, event.tokens, tuple(self._held))
                self._held = []
            out.append(event)
        return out


def _cut(entry: TokenLogprob, top_n: int) -> TokenLogprob:
    if len(entry.top) <= top_n:
        return entry
    return TokenLogprob(entry.token, entry.logprob, entry.token_bytes, entry.top[:top_n])


def _logprob(value: Any) -> float:
    """A logprob from the wire; at most 0 (a probability is at most 1)."""
    return min(float(value), 0.0)


def _bytes(raw: Any, text: str) -> bytes:
    if isinstance(raw, list):
        return bytes(int(b) & 0xFF for b in raw)
    return text.encode()


def _entry(raw: dict[str, Any]) -> TokenLogprob:
    """One `{token, logprob, bytes, top_logprobs}` entry (OpenAI chat, llama-server)."""
    text = str(raw.get("token", ""))
    top = tuple(
        _top(str(t.get("token", "")), t["logprob"], t.get("bytes"))
        for t in raw.get("top_logprobs") or ()
    )
    return TokenLogprob(text, _logprob(raw["logprob"]), _bytes(raw.get("bytes"), text), top)


def _top(text: str, logprob: Any, raw_bytes: Any = None) -> TopLogprob:
    return TopLogprob(text, _logprob(logprob), _bytes(raw_bytes, text))


def _legacy(raw: dict[str, Any]) -> list[TokenLogprob]:
    """OpenAI legacy completions: parallel lists, alternatives as `{text: logprob}`."""
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops: list[Any] = raw.get("top_logprobs") or []
    entries = []
    for index, (text, value) in enumerate(zip(tokens, values, strict=False)):
        if value is None:
            continue
        alternatives = tops[index] if index < len(tops) and tops[index] else {}
        ranked = sorted(alternatives.items(), key=lambda kv: -float(kv[1]))
        top = tuple(_top(str(t), v) for t, v in ranked)
        entries.append(TokenLogprob(str(text), _logprob(value), str(text).encode(), top))
    return entries


def openai_logprobs(chunk: Any) -> list[TokenLogprob]:
    """Logprobs of choice 0 of an OpenAI chunk (chat, or completions in either shape)."""
    for choice in chunk.get("choices") or ():
        if choice.get("index", 0) != 0:
            continue
        raw = choice.get("logprobs")
        if not raw:
            return []
        if "content" in raw:
            return [_entry(entry) for entry in raw.get("content") or ()]
        return _legacy(raw)
    return []


def llama_native_logprobs(chunk: Any) -> list[TokenLogprob]:
    """llama-server `/completion` chunk: `completion_probabilities`."""
    return [_entry(entry) for entry in chunk.get("completion_probabilities") or ()]


def tgi_logprobs(event: Any) -> list[TokenLogprob]:
    """TGI `/generate_stream` event: the token and its `top_tokens` (special ones skipped,
    as their text is not output)."""
    token = event.get("token")
    if not token or token.get("special") or token.get("logprob") is None:
        return []
    top = _tgi_top(event.get("top_tokens") or ())
    text = str(token.get("text", ""))
    return [TokenLogprob(text, _logprob(token["logprob"]), text.encode(), top)]


def _tgi_top(raw: Iterable[dict[str, Any]]) -> tuple[TopLogprob, ...]:
    valid = [t for t in raw if t.get("logprob") is not None and not t.get("special")]
    valid.sort(key=lambda t: -float(t["logprob"]))
    return tuple(_top(str(t.get("text", "")), t["logprob"]) for t in valid)
