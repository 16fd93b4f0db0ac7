"""AdapterHost: bindings per (pool, replica), atomic rebind, cancel routing (ADP-06)."""

from __future__ import annotations

import pytest
from adapter_host import AdapterHost, ReplicaKey
from worker_adapters import End, Endpoint, GenerateRequest, Sampling, Started, Token

KEY = ReplicaKey("pool-a", 0)


def request(job_id: str, max_tokens: int = 3) -> GenerateRequest:
    return GenerateRequest(job_id, Sampling(max_tokens=max_tokens), prompt="hi")


async def test_submit_streams_events_from_the_bound_adapter() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://"))
    events = [e async for e in host.submit(KEY, request("j1"))]
    assert isinstance(events[0], Started) and isinstance(events[-1], End)
    assert sum(1 for e in events if isinstance(e, Token)) == 3
    await host.close()


async def test_submitting_to_an_unbound_replica_raises_lookup_error() -> None:
    host = AdapterHost()
    with pytest.raises(LookupError, match="pool-a"):
        async for _ in host.submit(KEY, request("j1")):
            pass


async def test_rebinding_to_a_new_endpoint_lets_running_jobs_finish_on_the_old_adapter() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://token_delay_ms=5"))
    running = host.submit(KEY, request("old", max_tokens=20))
    first = await anext(running)
    assert isinstance(first, Started)
    host.bind(KEY, "mock", Endpoint("mock://"))  # atomic swap for new work
    fresh = [e async for e in host.submit(KEY, request("new"))]
    assert isinstance(fresh[-1], End)
    rest = [e async for e in running]
    assert isinstance(rest[-1], End) and rest[-1].tokens_out == 20
    await host.close()


async def test_rebinding_to_the_same_endpoint_keeps_the_adapter() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://"))
    running = host.submit(KEY, request("j", max_tokens=5))
    await anext(running)
    host.bind(KEY, "mock", Endpoint("mock://"))
    assert host.bound() == {KEY}
    assert isinstance([e async for e in running][-1], End)
    await host.close()


async def test_cancel_reaches_the_adapter_running_the_job() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://token_delay_ms=20"))
    stream = host.submit(KEY, request("slow", max_tokens=10_000))
    await anext(stream)
    await anext(stream)
    assert await host.cancel("slow") is True
    remaining = [e async for e in stream]
    assert isinstance(remaining[-1], End) and remaining[-1].finish_reason == "cancelled"
    assert await host.cancel("slow") is False  # finished jobs are not found
    await host.close()


async def test_unbind_removes_the_replica() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://"))
    host.unbind(KEY)
    assert host.bound() == frozenset()
    await host.close()


def test_an_unknown_adapter_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown adapter kind"):
        AdapterHost().bind(KEY, "no-such-kind", Endpoint("x"))
