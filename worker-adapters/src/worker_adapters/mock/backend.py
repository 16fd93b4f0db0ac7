"""`MockBackend`: a fake engine that streams deterministic words, with fault knobs.

It exists to test what real engines do rarely or only under failure: slow tokens, a
long wait for the first token, an error before or after N tokens, a hang, and streams
that break the protocol ("malformed": a token before `Started`, a stream with no
terminal event, two terminal events). Knobs come from `MockKnobs` (the worker's
`--mock` option) and can be overridden per request by a directive in the prompt or the
last chat message, e.g. `[[mock fail_after=3 token_delay_ms=20]]`.

Text: word `k` of a job is `WORDS[(seed + k) % len(WORDS)]` followed by a space, so a
given seed always gives the same stream (`max_tokens` and `seed` are the only request
parameters it honours; others are refused, UNSUPPORTED_PARAM); the `utf8` knob uses
`UTF8_WORDS` instead (multi-byte characters of 2, 3 and 4 bytes). It is a fake: it runs no model.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields, replace

from worker_adapters.capabilities import refusal
from worker_adapters.types import (
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Started,
    StreamEvent,
    Token,
    Tokenized,
)

__all__ = ["UTF8_WORDS", "WORDS", "MockBackend", "MockKnobs"]

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
UTF8_WORDS = ("héllo", "€uro", "日本語", "🙂", "naïve", "Ωmega", "中文", "👍🏽")
_DIRECTIVE = re.compile(r"\[\[mock([^\]]*)\]\]")


@dataclass(frozen=True, slots=True)
class MockKnobs:
    """Fault knobs. Delays in milliseconds; -1 means "off" for the token counts."""

    token_delay_ms: float = 0.0
    first_token_delay_ms: float = 0.0
    fail_before_first: bool = False
    fail_after: int = -1
    hang_after: int = -1
    malformed: str = ""  # "" | token-before-started | no-terminal | double-end
    utf8: bool = False
    ctx: int = 4096
    slots: int = 4

    def with_directive(self, text: str) -> MockKnobs:
        match = _DIRECTIVE.search(text)
        if not match:
            return self
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, object] = {}
        for item in match.group(1).split():
            name, _, value = item.partition("=")
            kind = types.get(name)
            if kind is None:
                raise ValueError(f"unknown mock knob {name!r}")
            changes[name] = _parse(str(kind), value)
        return replace(self, **changes)  # type: ignore[arg-type]


def _parse(kind: str, value: str) -> object:
    if kind == "bool":
        return value.lower() in {"1", "true", "yes", ""}
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


class MockBackend:
    """Fake engine; see the module docstring."""

    def __init__(self, knobs: MockKnobs | None = None, *, incarnation: int = 0) -> None:
        self._knobs = knobs or MockKnobs()
        self._incarnation = incarnation
        self._cancelled: set[str] = set()
        self._running: set[str] = set()
        self._ready = False

    async def start(self) -> None:
        self._ready = True

    async def close(self) -> None:
        self._ready = False

    def health(self) -> EngineHealth:
        if not self._ready:
            return EngineHealth("loading", "starting", self._knobs.slots)
        return EngineHealth("ready", "", self._knobs.slots, len(self._running))

    def props(self) -> EngineProps:
        return EngineProps(
            engine="mock",
            engine_version="mock 1",
            ctx=self._knobs.ctx,
            slots_total=self._knobs.slots,
            chat_template=True,
            features=frozenset({"completion", "chat", "embedding"}),
            incarnation=self._incarnation,
        )

    def cancel(self, job_id: str) -> bool:
        if job_id not in self._running:
            return False
        self._cancelled.add(job_id)
        return True

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        refused = refusal("mock", request)  # it honours max_tokens and seed only (API-16)
        if refused is not None:
            yield refused
            return
        text = request.prompt or (request.messages[-1].content if request.messages else "")
        try:
            knobs = self._knobs.with_directive(text)
        except ValueError as exc:
            yield Failed("INVALID_PARAMS", str(exc), False, True)
            return
        self._running.add(request.job_id)
        try:
            async for event in self._stream(request, knobs, len(text.split())):
                yield event
        finally:
            self._running.discard(request.job_id)
            self._cancelled.discard(request.job_id)

    async def _stream(
        self, request: GenerateRequest, knobs: MockKnobs, tokens_in: int
    ) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        if knobs.malformed == "token-before-started":
            yield Token("oops ")
        yield Started(tokens_in)
        if knobs.first_token_delay_ms:
            await asyncio.sleep(knobs.first_token_delay_ms / 1000.0)
        if knobs.fail_before_first:
            yield Failed("ENGINE_ERROR", "mock: failure before the first token", True, True)
            return
        seed = request.sampling.seed or 0
        words = UTF8_WORDS if knobs.utf8 else WORDS
        first_at = 0.0
        produced = 0
        finish = "length"
        while produced < request.sampling.max_tokens:
            if request.job_id in self._cancelled:
                finish = "cancelled"
                break
            if produced == knobs.fail_after:
                yield Failed("ENGINE_ERROR", f"mock: failure after {produced} tokens", True, False)
                return
            if produced == knobs.hang_after:
                await asyncio.Event().wait()
            if produced and knobs.token_delay_ms:
                await asyncio.sleep(knobs.token_delay_ms / 1000.0)
            produced += 1
            first_at = first_at or time.perf_counter()
            yield Token(words[(seed + produced - 1) % len(words)] + " ")
        if knobs.malformed == "no-terminal":
            return
        done = time.perf_counter()
        ttft_ms = ((first_at or done) - started) * 1000.0
        decode_ms = (done - first_at) * 1000.0 if first_at else 0.0
        end = End(tokens_in, produced, finish, ttft_ms, decode_ms)
        yield end
        if knobs.malformed == "double-end":
            yield end

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        data = text.encode()
        ids = tuple(data)
        return Tokenized(ids, tuple(range(len(data))) if with_offsets else ())

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(b) / 255.0 for b in text.encode()[:8].ljust(8)) for text in inputs)
