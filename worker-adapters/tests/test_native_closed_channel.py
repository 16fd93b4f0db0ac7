"""A native adapter's unary calls when its channel closes under them: the worker is
gone to the caller (`EngineUnavailable`), never a bare `CancelledError` that a server
would answer with a plain-text 500."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from specs.worker.v1 import worker_pb2_grpc
from worker_adapters import Endpoint
from worker_adapters.errors import EngineUnavailable, RequestRejected
from worker_adapters.mock import MockBackend
from worker_adapters.native.adapter import NativeAdapter
from worker_adapters.worker.server import WorkerServicer


class _HangingDetokenize(MockBackend):
    """Detokenize never answers; `called` is set once a call has arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        self.called.set()
        await asyncio.Event().wait()
        return ""


@pytest.fixture
async def served() -> AsyncIterator[tuple[NativeAdapter, _HangingDetokenize]]:
    backend = _HangingDetokenize()
    await backend.start()
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(backend), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    adapter = NativeAdapter(Endpoint(f"127.0.0.1:{port}"))
    try:
        yield adapter, backend
    finally:
        await adapter.close()
        await server.stop(None)
        await backend.close()


async def test_a_call_in_flight_when_the_channel_closes_is_engine_unavailable(
    served: tuple[NativeAdapter, _HangingDetokenize],
) -> None:
    adapter, backend = served
    call = asyncio.create_task(adapter.detokenize((1, 2, 3)))
    await asyncio.wait_for(backend.called.wait(), 10)
    await adapter.close()  # what unbinding a replica does
    with pytest.raises(EngineUnavailable):
        await asyncio.wait_for(call, 10)


async def test_a_call_on_a_closed_channel_is_engine_unavailable(
    served: tuple[NativeAdapter, _HangingDetokenize],
) -> None:
    adapter, _ = served
    await adapter.close()
    with pytest.raises(EngineUnavailable):
        await adapter.detokenize((1,))


async def test_cancelling_the_caller_still_cancels(
    served: tuple[NativeAdapter, _HangingDetokenize],
) -> None:
    adapter, backend = served
    call = asyncio.create_task(adapter.detokenize((1,)))
    await asyncio.wait_for(backend.called.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


@pytest.mark.parametrize("token", [-1, 2**32])
async def test_ids_the_wire_cannot_carry_are_refused_before_the_call(
    served: tuple[NativeAdapter, _HangingDetokenize], token: int
) -> None:
    adapter, backend = served
    with pytest.raises(RequestRejected) as refused:
        await adapter.detokenize((3, token))
    assert refused.value.code == "INVALID_PARAMS" and "tokens[1]" in str(refused.value)
    assert not backend.called.is_set()
