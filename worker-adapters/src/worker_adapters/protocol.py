"""The adapter protocol (ADP-01) and the registry of adapter kinds.

An adapter talks to one engine endpoint (one pool replica). `submit` returns the job's
event stream; the stream always ends with exactly one `End` or `Failed` and never
raises for engine failures. `cancel` is idempotent and returns once the cancel has been
sent to the engine. Adapters are created by kind name through `create_adapter`; the
registry refuses duplicate names (STYLE.md rule 5).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from specs.tls import ClientTls

from worker_adapters.types import EngineHealth, EngineProps, GenerateRequest, StreamEvent, Tokenized

__all__ = [
    "Adapter",
    "AdapterFactory",
    "Endpoint",
    "aclose_quietly",
    "create_adapter",
    "known_kinds",
    "one_per_batch",
    "register",
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an engine listens and how to authenticate. `api_key` is a secret: never log it.
    `tls`: dial with TLS, trusting its roots (None: plaintext): gRPC for `native`,
    HTTPS for the HTTP adapters."""

    address: str
    api_key: str = ""
    tls: ClientTls | None = None

    def __repr__(self) -> str:
        return (
            f"Endpoint(address={self.address!r}, api_key={'***' if self.api_key else ''!r}, "
            f"tls={self.tls is not None})"
        )


class Adapter(Protocol):
    """One engine endpoint, spoken to in its own protocol."""

    kind: str

    def submit(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        """Start a generation; iterate the result for its events."""
        ...

    def submit_batches(self, request: GenerateRequest) -> AsyncIterator[Sequence[StreamEvent]]:
        """`submit`, with the events that reached the adapter together handed on as one
        list (the orchestrator's token path publishes each list at once). An adapter
        that reads one event at a time returns `one_per_batch(self.submit(request))`."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop the job at the engine (ADP-04). Idempotent."""
        ...

    async def health(self) -> EngineHealth: ...

    async def props(self) -> EngineProps: ...

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized: ...

    async def detokenize(self, ids: tuple[int, ...]) -> str: ...

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]: ...

    async def close(self) -> None: ...


AdapterFactory = Callable[[Endpoint], Adapter]


async def aclose_quietly(stream: object) -> None:
    """Close an async generator a consumer stopped early (no-op for other iterators)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):  # already running: cancelled mid-await
            await close()


async def one_per_batch(
    events: AsyncIterator[StreamEvent],
) -> AsyncIterator[Sequence[StreamEvent]]:
    """A `submit` stream as `submit_batches` gives it, one event per list (for adapters
    that do not batch); closing it closes `events`."""
    try:
        async for event in events:
            yield (event,)
    finally:
        await aclose_quietly(events)


_REGISTRY: dict[str, AdapterFactory] = {}


def register(kind: str, factory: AdapterFactory) -> None:
    """Register an adapter kind; a kind registered twice is a programming error."""
    if kind in _REGISTRY:
        raise ValueError(f"adapter kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def create_adapter(kind: str, endpoint: Endpoint) -> Adapter:
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {sorted(_REGISTRY)}") from None
    return factory(endpoint)


def known_kinds() -> frozenset[str]:
    return frozenset(_REGISTRY)
