"""The OpenAI streaming wire, shared by every engine that speaks it.

Used by `openai` (any OpenAI-compatible server, llama_cpp.server included), `vllm`,
`llamacpp` (its `/v1/chat/completions` route for chat) and `tgi` (its
`/v1/chat/completions` route for chat). Request bodies carry only the standard OpenAI
fields here; each adapter adds the extras its engine honours.

`OpenAIDecoder` reads `/v1/completions` (`choices[0].text`) and `/v1/chat/completions`
(`choices[0].delta.content`) chunks:
- the first chunk gives `Started` (tokens_in from `usage.prompt_tokens` when the engine
  sends usage on every chunk, as vLLM does with `continuous_usage_stats`, else 0);
- non-empty text is a `Token` (role-only, usage-only `choices: []` and empty chunks are
  not); a `finish_reason` is remembered (TGI sends `""` on non-final chunks: not one);
- `data: [DONE]` is the terminal marker: `End` if a finish reason came first, else the
  stream was cut short (llama_cpp.server's interrupt_requests ends streams that way)
  and it is `WORKER_RESET`. `abort` (vLLM: aborted in the engine) is `WORKER_RESET`
  with `engine_lost`; `error` is `ENGINE_ERROR`;
- an error frame (`{"error": ...}` or the old flat `{"object": "error"}`) ends the job
  with `ENGINE_ERROR` at once: vLLM sends `[DONE]` after it, which is no success.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from worker_adapters._http import error_from_body
from worker_adapters.constraints import SCHEMA_VIOLATION, schema_violation
from worker_adapters.http_errors import frame_failure, truncated
from worker_adapters.types import End, Failed, GenerateRequest, Started, StreamEvent, Token

__all__ = ["OpenAIDecoder", "chat_body", "completion_body", "normalize_finish"]

_DONE = b"[DONE]"
_MAX_LEARN = 2  # frames whose text moves (per-chunk usage, say) stay on the slow path
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "eos": "stop"}


def _standard(request: GenerateRequest, model: str) -> dict[str, Any]:
    sampling = request.sampling
    body: dict[str, Any] = {"model": model, "stream": True, "max_tokens": sampling.max_tokens}
    pairs = (
        ("temperature", sampling.temperature),
        ("top_p", sampling.top_p),
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
        ("seed", sampling.seed),
    )
    body.update((name, value) for name, value in pairs if value is not None)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    return body


def completion_body(request: GenerateRequest, model: str) -> dict[str, Any]:
    """`/v1/completions` body with the standard OpenAI fields."""
    return {**_standard(request, model), "prompt": request.prompt or ""}


def chat_body(request: GenerateRequest, model: str) -> dict[str, Any]:
    """`/v1/chat/completions` body; the server renders the model's chat template."""
    messages = [{"role": turn.role, "content": turn.content} for turn in request.messages or ()]
    return {**_standard(request, model), "messages": messages}


def normalize_finish(reason: str) -> str:
    """One vocabulary of finish reasons: stop | length | tool_calls | ..."""
    return _FINISH.get(reason, reason)


class OpenAIDecoder:
    """Per stream; see the module docstring. `check_json` fails an output that is not JSON
    with `SCHEMA_VIOLATION`, not retriable (a guard for servers that may ignore
    `response_format`; the orchestrator checks the whole schema for every engine)."""

    __slots__ = (
        "_check_json",
        "_finish",
        "_key",
        "_learned",
        "_started",
        "_template",
        "_text",
        "_tokens",
        "_usage",
    )

    def __init__(self, *, chat: bool, check_json: bool = False) -> None:
        self._key = "delta" if chat else ""
        self._check_json = check_json
        self._started = False
        self._tokens = 0
        self._finish = ""
        self._usage: dict[str, Any] = {}
        self._text: list[str] = []
        self._template: _Template | None = None
        self._learned = 0

    def feed(self, data: bytes) -> Sequence[StreamEvent]:
        template = self._template
        if template is not None:
            fast = template.text_of(data)
            if fast is not None:
                return self._token(fast) if fast else ()
        if data == _DONE:
            return (self._done(),)
        try:
            chunk = json.loads(data)
        except ValueError:
            return (Failed("ENGINE_ERROR", "malformed stream frame", True, not self._tokens),)
        if not isinstance(chunk, dict):
            return (Failed("ENGINE_ERROR", "malformed stream frame", True, not self._tokens),)
        if "error" in chunk or chunk.get("object") == "error":
            message = error_from_body(200, chunk).message
            return (frame_failure(message, tokens_seen=self._tokens > 0),)
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        events: list[StreamEvent] = []
        text: Any = None
        if not self._started:
            self._started = True
            events.append(Started(int(self._usage.get("prompt_tokens") or 0)))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            text = (choice.get("delta") or {}).get("content") if self._key else choice.get("text")
            if text:
                events.extend(self._token(text))
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        if self._learned < _MAX_LEARN and isinstance(text, str) and _plain(chunk, self._key):
            self._learned += 1
            self._template = _Template.learn(data, text, self._key) or self._template
        return events

    def feed_all(self, payloads: Sequence[bytes], out: list[StreamEvent]) -> End | Failed | None:
        """`feed` over one read's payloads (see `_relay.feed_all_of`): plain token frames
        are read inline, without a call and a tuple per token."""
        template = self._template
        check_json = self._check_json
        for data in payloads:
            if template is not None:
                text = template.text_of(data)
                if text is not None:
                    if text:
                        self._tokens += 1
                        if check_json:
                            self._text.append(text)
                        out.append(Token(text))
                    continue
            for event in self.feed(data):
                if isinstance(event, End | Failed):
                    return event
                out.append(event)
            template = self._template  # a frame may have taught it
        return None

    def _token(self, text: str) -> tuple[Token]:
        self._tokens += 1
        if self._check_json:
            self._text.append(text)
        return (Token(text),)

    def _done(self) -> End | Failed:
        seen = self._tokens > 0
        if not self._finish:
            return truncated(tokens_seen=seen, detail="[DONE] before any finish_reason")
        if self._finish == "abort":
            return Failed("WORKER_RESET", "engine aborted the request", True, not seen, True)
        if self._finish == "error":
            return frame_failure("engine finished the request with an error", tokens_seen=seen)
        if self._check_json:
            reason = schema_violation({}, "".join(self._text), finish_reason=self._finish)
            if reason is not None:
                return Failed(SCHEMA_VIOLATION, reason, False, not seen)
        return End(
            tokens_in=int(self._usage.get("prompt_tokens") or 0),
            tokens_out=int(self._usage.get("completion_tokens") or self._tokens),
            finish_reason=normalize_finish(self._finish),
            ttft_ms=0.0,
            decode_time_ms=0.0,
        )


def _plain(chunk: dict[str, Any], key: str) -> bool:
    """A chunk that is one text delta and nothing else (no finish, usage or role)."""
    choices = chunk.get("choices")
    if chunk.get("usage") or not isinstance(choices, list) or len(choices) != 1:
        return False
    choice = choices[0]
    if not isinstance(choice, dict) or choice.get("index", 0) != 0 or choice.get("finish_reason"):
        return False
    if key:
        delta = choice.get("delta")
        return isinstance(delta, dict) and set(delta) == {"content"}
    return True


class _Template:
    """The bytes around the text of a plain token frame, learned from one decoded frame.

    A later frame with the same bytes before and after, and exactly one JSON string
    literal between them, is the same JSON object with other text: its text is read
    from the literal alone, without decoding the frame (the common frame of every
    OpenAI-style stream, ~3x cheaper). Anything else goes the slow way."""

    __slots__ = ("_prefix", "_start", "_suffix", "_tail")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._start = len(prefix) + 1  # the text, inside the literal's quotes
        self._tail = -len(suffix) - 1

    @staticmethod
    def learn(data: bytes, text: str, key: str) -> _Template | None:
        name = b'"content":' if key else b'"text":'
        if data.count(name) != 1:
            return None
        start = data.index(name) + len(name)
        literal = _STRING.match(data, start)
        if literal is None or json.loads(literal.group()) != text:
            return None
        return _Template(data[:start], data[literal.end() :])

    def text_of(self, data: bytes) -> str | None:
        """The text of a frame of this shape; None for any other frame."""
        if not (data.startswith(self._prefix) and data.endswith(self._suffix)):
            return None
        start, tail = self._start, self._tail
        if len(data) < start - tail or data[start - 1] != 0x22 or data[tail] != 0x22:
            return None
        inner = data[start:tail]
        try:
            if b'"' not in inner and b"\\" not in inner:
                return inner.decode()
            value = json.loads(data[start - 1 : tail + 1 or None])
        except ValueError:  # UnicodeDecodeError and JSONDecodeError included
            return None
        return value if isinstance(value, str) else None
