"""AdapterHost.submit_batches: the same events as submit, in lists; adapters without a
batching path give one event per list; the job is forgotten when the stream ends."""

from __future__ import annotations

from adapter_host import AdapterHost, ReplicaKey
from worker_adapters import End, Endpoint, GenerateRequest, Sampling, Started, Token

KEY = ReplicaKey("pool-a", 0)


def request(job_id: str, max_tokens: int = 4) -> GenerateRequest:
    return GenerateRequest(job_id, Sampling(max_tokens=max_tokens), prompt="hi")


async def test_an_adapter_without_batches_gives_one_event_per_list() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://"))
    batches = [batch async for batch in host.submit_batches(KEY, request("j1"))]
    assert all(len(batch) == 1 for batch in batches)
    events = [event for batch in batches for event in batch]
    assert isinstance(events[0], Started) and isinstance(events[-1], End)
    assert sum(1 for e in events if isinstance(e, Token)) == 4
    assert not await host.cancel("j1")  # forgotten once the stream ended
    await host.close()


async def test_closing_a_batch_stream_early_forgets_the_job() -> None:
    host = AdapterHost()
    host.bind(KEY, "mock", Endpoint("mock://token_delay_ms=5"))
    batches = host.submit_batches(KEY, request("j2", max_tokens=1000))
    assert isinstance((await anext(batches))[0], Started)
    await batches.aclose()
    assert not await host.cancel("j2")
    await host.close()
