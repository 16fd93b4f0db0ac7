"""The relay hands on the events of one engine read together (`submit_batches`), and never
waits for more: a lone token is handed on as soon as its read returned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from worker_adapters import End, Endpoint, Failed, GenerateRequest, Sampling, StreamEvent, Token
from worker_adapters._http import HttpSettings
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.testing import llamacpp_transcripts as llama
from worker_adapters.testing.fake_engines import FakeLlamaServer
from worker_adapters.testing.transcripts import Transcript

pytestmark = pytest.mark.usefixtures("http_session")
SETTINGS = HttpSettings(stall_timeout_s=30.0)
TEXTS = [f"t{i}" for i in range(50)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlamaServer]:
    async with FakeLlamaServer() as server:
        yield server


@pytest.fixture
def adapter(fake: FakeLlamaServer) -> LlamaServerAdapter:
    return LlamaServerAdapter(Endpoint(fake.address), SETTINGS)


def request(job_id: str) -> GenerateRequest:
    return GenerateRequest(job_id, Sampling(max_tokens=64), prompt="hi")


def texts(batches: Sequence[Sequence[StreamEvent]]) -> list[str]:
    return [e.text for batch in batches for e in batch if isinstance(e, Token)]


async def test_frames_of_one_read_come_as_one_batch_and_the_terminal_alone(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    frames = b"".join(llama.completion("x", TEXTS).writes)
    fake.script("j", Transcript("one-write", "synthetic: 50 frames in one write", (frames,)))
    batches = [batch async for batch in adapter.submit_batches(request("j"))]
    assert texts(batches) == TEXTS
    assert len(batches) < len(TEXTS)  # several tokens shared a batch
    assert len(batches[-1]) == 1 and isinstance(batches[-1][0], End)
    assert all(not isinstance(e, End | Failed) for batch in batches[:-1] for e in batch)


async def test_batches_flatten_to_the_same_events_as_submit(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    fake.script("a", llama.completion("x", TEXTS))
    fake.script("b", llama.completion("x", TEXTS))
    one_by_one = [event async for event in adapter.submit(request("a"))]
    batched = [event async for batch in adapter.submit_batches(request("b")) for event in batch]
    assert [type(e) for e in one_by_one] == [type(e) for e in batched]
    assert texts([one_by_one]) == texts([batched]) == TEXTS


async def test_a_lone_token_is_handed_on_without_waiting_for_the_next(
    fake: FakeLlamaServer, adapter: LlamaServerAdapter
) -> None:
    # The engine writes one frame a minute: a relay that waited to fill a batch would
    # hold the first token far past the deadline below.
    fake.script("j", llama.completion("slow", ["first", "second"], pace_s=60.0))
    batches = adapter.submit_batches(request("j"))
    try:
        async with asyncio.timeout(10.0):
            seen: list[StreamEvent] = []
            while not any(isinstance(e, Token) for e in seen):
                seen += await anext(batches)
        assert texts([seen]) == ["first"]
    finally:
        await adapter.cancel("j")
        await batches.aclose()  # type: ignore[attr-defined]
