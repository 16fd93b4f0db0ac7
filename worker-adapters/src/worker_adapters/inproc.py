"""`InProcessAdapter`: the adapter protocol over an in-process `EngineBackend`.

Used for the `mock` adapter kind, so the orchestrator's component tests can run the
whole dispatch path without engine processes. The endpoint address carries the mock's
knobs (`mock://token_delay_ms=5,fail_after=3`); the backend is created and started on
first use. The backend's events pass through `_guard.guarded`, so a fault knob that
breaks the stream contract (no terminal, a hang) still ends in one typed terminal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from worker_adapters._guard import guarded
from worker_adapters.engine import EngineBackend
from worker_adapters.mock import MockBackend, MockKnobs
from worker_adapters.protocol import Endpoint, one_per_batch, register
from worker_adapters.types import EngineHealth, EngineProps, GenerateRequest, StreamEvent, Tokenized

__all__ = ["DEFAULT_STALL_TIMEOUT_S", "InProcessAdapter"]

# A backstop: the orchestrator's watchdog (ADM-06) normally ends a stalled job first.
DEFAULT_STALL_TIMEOUT_S = 300.0


class InProcessAdapter:
    kind = "mock"

    def __init__(
        self, backend: EngineBackend, *, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    ) -> None:
        self._backend = backend
        self._started = False
        self._stall_timeout_s = stall_timeout_s

    async def _ready(self) -> EngineBackend:
        if not self._started:
            await self._backend.start()
            self._started = True
        return self._backend

    async def submit(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        backend = await self._ready()
        events = backend.generate(request)
        async for event in guarded(events, stall_timeout_s=self._stall_timeout_s):
            yield event

    def submit_batches(self, request: GenerateRequest) -> AsyncIterator[Sequence[StreamEvent]]:
        return one_per_batch(self.submit(request))

    async def cancel(self, job_id: str) -> None:
        self._backend.cancel(job_id)

    async def health(self) -> EngineHealth:
        return (await self._ready()).health()

    async def props(self) -> EngineProps:
        return (await self._ready()).props()

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        return await (await self._ready()).tokenize(text, with_offsets=with_offsets)

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        return await (await self._ready()).detokenize(ids)

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        return await (await self._ready()).embed(inputs)

    async def close(self) -> None:
        await self._backend.close()


def _mock_adapter(endpoint: Endpoint) -> InProcessAdapter:
    knobs = endpoint.address.removeprefix("mock://").replace(",", " ")
    return InProcessAdapter(MockBackend(MockKnobs().with_directive(f"[[mock {knobs}]]")))


register("mock", _mock_adapter)
