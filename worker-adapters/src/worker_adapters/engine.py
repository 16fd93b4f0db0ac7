"""The in-process engine protocol: what `llorch worker` hosts behind its gRPC service.

An `EngineBackend` owns one model and its slots. `generate` runs one generation and
yields domain events; it must never block the event loop (native calls run on the
backend's own threads). Implementations: `llamacpp_inproc.LlamaBackend` (real
llama.cpp through llama-cpp-python) and `mock.MockBackend` (a fake with fault knobs, for
tests), `vllm_inproc.VllmBackend` (vLLM's `AsyncLLM`). `coalesce_tokens` is the shared
helper that merges token events already waiting in a queue, so a slow consumer gets
fewer, larger events while the first token is never held back.

What the real in-process engines decide alike: `engine_health` (loading with its
progress, a failure as it is, or ready with the busy slots), `engine_props` (the
generation features, embeddings where served) and `refusal_to_start` (POOL_UNREADY
while not ready, else the capability matrix's refusal, API-16).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from worker_adapters.capabilities import refusal
from worker_adapters.types import (
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    StreamEvent,
    Token,
    Tokenized,
)

__all__ = [
    "GENERATION_FEATURES",
    "EngineBackend",
    "EngineSettings",
    "coalesce_tokens",
    "engine_health",
    "engine_props",
    "refusal_to_start",
]

# What every real in-process engine serves (`embedding` besides, where the model does).
GENERATION_FEATURES = frozenset({"completion", "chat", "grammar", "json_schema", "logprobs"})


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


class EngineSettings(Protocol):
    """What an in-process engine's settings say of its model and slots."""

    @property
    def model_path(self) -> Path: ...

    @property
    def ctx(self) -> int: ...

    @property
    def slots(self) -> int: ...


def engine_health(
    state: EngineHealth, slots_total: int, busy: int, load_progress: float | None = None
) -> EngineHealth:
    """The health an in-process engine reports from its lifecycle `state`: while loading,
    that state with `load_progress` (None where the engine cannot tell); any state but
    ready as it is; ready with `busy` of its `slots_total` slots."""
    if state.state == "loading":
        return dataclasses.replace(state, load_progress=load_progress)
    if state.state != "ready":
        return state
    return EngineHealth("ready", "", slots_total, busy)


def engine_props(
    engine: str,
    engine_version: str,
    settings: EngineSettings,
    *,
    chat_template: bool,
    embeddings: bool,
    incarnation: int,
) -> EngineProps:
    """The props of an in-process engine serving `settings`' model: the generation
    features, and `embedding` where it serves embeddings."""
    features = GENERATION_FEATURES | {"embedding"} if embeddings else GENERATION_FEATURES
    return EngineProps(
        engine=engine,
        engine_version=engine_version,
        ctx=settings.ctx,
        slots_total=settings.slots,
        chat_template=chat_template,
        features=features,
        model_path=str(settings.model_path),
        incarnation=incarnation,
    )


def refusal_to_start(engine: str, ready: bool, request: GenerateRequest) -> Failed | None:
    """Why a generation cannot start, as its one event: POOL_UNREADY (retriable) while
    the engine is not `ready`, else the capability matrix's refusal (API-16); None when it
    may start."""
    if not ready:
        return Failed("POOL_UNREADY", "engine is not ready", True, True)
    return refusal(engine, request)


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
