"""The in-process engine protocol: what `llorch worker` hosts behind its gRPC service.

An `EngineBackend` owns one model and its slots. `generate` runs one generation and
yields domain events; it must never block the event loop (native calls run on the
backend's own threads). Implementations: `llamacpp_inproc.LlamaBackend` (real
llama.cpp through llama-cpp-python) and `mock.MockBackend` (a fake with fault knobs, for
tests). `coalesce_tokens` is the shared helper that merges token events already waiting
in a queue, so a slow consumer gets fewer, larger events while the first token is never
held back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from worker_adapters.types import (
    EngineHealth,
    EngineProps,
    GenerateRequest,
    StreamEvent,
    Token,
    Tokenized,
)

__all__ = ["EngineBackend", "coalesce_tokens"]


class EngineBackend(Protocol):
    """One in-process engine serving one model with a fixed number of slots."""

    async def start(self) -> None:
        """Load the model. Health reports `loading` until this returns."""
        ...

    def health(self) -> EngineHealth: ...

    def props(self) -> EngineProps: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]: ...

    def cancel(self, job_id: str) -> bool:
        """Ask a running generation to stop; False when the job is unknown. Never blocks."""
        ...

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized: ...

    async def detokenize(self, ids: tuple[int, ...]) -> str: ...

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]: ...

    async def close(self) -> None: ...


async def coalesce_tokens(
    queue: asyncio.Queue[StreamEvent | None],
) -> AsyncIterator[StreamEvent]:
    """Yield events from `queue` until None; consecutive waiting tokens are merged.

    Only events already in the queue are merged, so nothing waits for a batch to fill.
    """
    while True:
        event = await queue.get()
        if event is None:
            return
        if not isinstance(event, Token):
            yield event
            continue
        merged = [event]
        follower: StreamEvent | None = None
        has_follower = False
        while not queue.empty():
            nxt = queue.get_nowait()
            if isinstance(nxt, Token):
                merged.append(nxt)
                continue
            follower, has_follower = nxt, True
            break
        yield _merge(merged) if len(merged) > 1 else event
        if not has_follower:
            continue
        if follower is None:
            return
        yield follower


def _merge(tokens: list[Token]) -> Token:
    text = "".join(t.text for t in tokens)
    count = sum(t.tokens for t in tokens)
    if not any(t.logprobs for t in tokens):
        return Token(text, count)
    return Token(text, count, tuple(lp for t in tokens for lp in t.logprobs))
