"""`AdapterHost`: adapters keyed by (pool, replica), with job tracking for cancel.

Not thread-safe; lives on the orchestrator's event loop. Binding is idempotent for an
unchanged (kind, endpoint); a changed one creates a fresh adapter (atomic rebind) and
retires the old one, closing it once its in-flight jobs are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from worker_adapters import (
    Adapter,
    Endpoint,
    EngineHealth,
    EngineProps,
    GenerateRequest,
    StreamEvent,
    Tokenized,
    create_adapter,
)
from worker_adapters.protocol import aclose_quietly

__all__ = ["AdapterHost", "ReplicaKey", "ReplicaNotBound"]


class ReplicaNotBound(LookupError):
    """No adapter is bound for the replica (its pool left, or it was never bound):
    the one lookup failure that means the engine is gone, unlike any stray KeyError."""


@dataclass(frozen=True, slots=True, order=True)
class ReplicaKey:
    pool_id: str
    replica: int


@dataclass(slots=True)
class _Binding:
    kind: str
    endpoint: Endpoint
    adapter: Adapter
    in_flight: set[str] = field(default_factory=set)
    retired: bool = False


class AdapterHost:
    def __init__(self) -> None:
        self._bindings: dict[ReplicaKey, _Binding] = {}
        self._jobs: dict[str, _Binding] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def bind(self, key: ReplicaKey, kind: str, endpoint: Endpoint) -> None:
        current = self._bindings.get(key)
        if current is not None and current.kind == kind and current.endpoint == endpoint:
            return
        self._bindings[key] = _Binding(kind, endpoint, create_adapter(kind, endpoint))
        if current is not None:
            self._retire(current)

    def unbind(self, key: ReplicaKey) -> None:
        current = self._bindings.pop(key, None)
        if current is not None:
            self._retire(current)

    def bound(self) -> frozenset[ReplicaKey]:
        return frozenset(self._bindings)

    def _retire(self, binding: _Binding) -> None:
        binding.retired = True
        if not binding.in_flight:
            self._close_later(binding.adapter)

    def _close_later(self, adapter: Adapter) -> None:
        task = asyncio.get_running_loop().create_task(adapter.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _binding(self, key: ReplicaKey) -> _Binding:
        try:
            return self._bindings[key]
        except KeyError:
            raise ReplicaNotBound(
                f"no adapter bound for pool {key.pool_id} replica {key.replica}"
            ) from None

    async def submit(
        self, key: ReplicaKey, request: GenerateRequest
    ) -> AsyncGenerator[StreamEvent, None]:
        binding = self._binding(key)
        binding.in_flight.add(request.job_id)
        self._jobs[request.job_id] = binding
        try:
            async for event in binding.adapter.submit(request):
                yield event
        finally:
            binding.in_flight.discard(request.job_id)
            self._jobs.pop(request.job_id, None)
            if binding.retired and not binding.in_flight:
                self._close_later(binding.adapter)

    async def submit_batches(
        self, key: ReplicaKey, request: GenerateRequest
    ) -> AsyncGenerator[Sequence[StreamEvent], None]:
        """`submit`, with the events that reached the adapter together handed on together
        (`Adapter.submit_batches`)."""
        binding = self._binding(key)
        binding.in_flight.add(request.job_id)
        self._jobs[request.job_id] = binding
        batches = binding.adapter.submit_batches(request)
        try:
            async for batch in batches:
                yield batch
        finally:
            await aclose_quietly(batches)
            binding.in_flight.discard(request.job_id)
            self._jobs.pop(request.job_id, None)
            if binding.retired and not binding.in_flight:
                self._close_later(binding.adapter)

    async def cancel(self, job_id: str) -> bool:
        """Send the cancel to the engine running `job_id`; False if no engine runs it."""
        binding = self._jobs.get(job_id)
        if binding is None:
            return False
        await binding.adapter.cancel(job_id)
        return True

    async def health(self, key: ReplicaKey) -> EngineHealth:
        return await self._binding(key).adapter.health()

    async def props(self, key: ReplicaKey) -> EngineProps:
        return await self._binding(key).adapter.props()

    async def tokenize(
        self, key: ReplicaKey, text: str, *, with_offsets: bool = False
    ) -> Tokenized:
        return await self._binding(key).adapter.tokenize(text, with_offsets=with_offsets)

    async def detokenize(self, key: ReplicaKey, ids: tuple[int, ...]) -> str:
        return await self._binding(key).adapter.detokenize(ids)

    async def embed(
        self, key: ReplicaKey, inputs: tuple[str, ...]
    ) -> tuple[tuple[float, ...], ...]:
        return await self._binding(key).adapter.embed(inputs)

    async def close(self) -> None:
        adapters = [b.adapter for b in self._bindings.values()]
        self._bindings.clear()
        await asyncio.gather(*(a.close() for a in adapters), *self._closing, return_exceptions=True)
