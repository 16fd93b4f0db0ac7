"""The `triton` adapter against the real thing: `tritonserver` (bundled with PyTriton
0.7.0) serving the tiny llama model through our engine program, started from the
managed venv that `provisioners.engines.prepare_triton_engine` makes (cached under
$LLORCH_ENGINE_CACHE or ~/.cache/llorch/engines: minutes the first time, then instant).

A missing tool (Debian's python3.11, libpython3.11, uv) fails the module with the
provisioner's message naming it; nothing here skips. Waits are bounded polls of real
conditions: the engine's health, its own `{model}_stats` counters, or the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from catalog_core import write_tiny_model
from provisioners.engines import PreparedEngine, prepare_triton_engine, triton_engine_argv
from worker_adapters._http import close_shared_session
from worker_adapters.protocol import Endpoint
from worker_adapters.testing.processes import free_port
from worker_adapters.triton import TritonAdapter
from worker_adapters.triton.testing import TritonProcess, health_until_ready
from worker_adapters.types import (
    ChatTurn,
    End,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
)

# The first run of a session may build the venv (a cold llama-cpp-python build).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("http_session"),
    pytest.mark.timeout(3600),
]

CTX = 4096
LONG = 4000  # tokens: seconds of decoding, so a cancel lands mid-stream
BOUND_S = 60.0  # a stream that takes longer has hung
CANCEL_REACHES_ENGINE_S = 2.0


@dataclass(frozen=True, slots=True)
class StartUp:
    """What the shared engine's start-up looked like through `health()`."""

    states: tuple[str, ...]


@pytest.fixture(scope="module")
def prepared() -> PreparedEngine:
    return prepare_triton_engine()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("triton") / "tiny.gguf")


def start_engine(prepared: PreparedEngine, model: Path, root: Path) -> TritonProcess:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    argv = triton_engine_argv(
        prepared,
        model=model,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        ctx=CTX,
        threads=1,
    )
    return TritonProcess(argv, http_port, root / f"triton-{http_port}.log")


@pytest.fixture(scope="module")
def engine(
    prepared: PreparedEngine, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonProcess, StartUp]]:
    """One engine shared by the module, with the health states seen while it started."""
    process = start_engine(prepared, model, tmp_path_factory.mktemp("shared"))

    async def watch() -> list[str]:
        adapter = TritonAdapter(Endpoint(process.address))
        try:
            return await health_until_ready(adapter)
        finally:
            await adapter.close()
            await close_shared_session()

    try:
        states = asyncio.run(watch())
        yield process, StartUp(tuple(states))
    finally:
        assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture
async def adapter(engine: tuple[TritonProcess, StartUp]) -> AsyncIterator[TritonAdapter]:
    triton = TritonAdapter(Endpoint(engine[0].address))
    yield triton
    await triton.close()


async def run(adapter: TritonAdapter, request: GenerateRequest) -> list[StreamEvent]:
    async def collect() -> list[StreamEvent]:
        return [event async for event in adapter.submit(request)]

    return await asyncio.wait_for(collect(), BOUND_S)


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def completion(job_id: str, max_tokens: int, **sampling: Any) -> GenerateRequest:
    return GenerateRequest(job_id, Sampling(max_tokens, **sampling), "Hello world")


async def engine_idle(adapter: TritonAdapter) -> dict[str, Any]:
    """The engine's stats once it decodes nothing (its own gauge), bounded."""

    async def poll() -> dict[str, Any]:
        while True:
            stats = await adapter.stats()
            if stats["generations_active"] == 0:
                return stats
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), CANCEL_REACHES_ENGINE_S)


# -- start-up and facts -------------------------------------------------------------------


def test_health_goes_from_unreachable_or_loading_to_ready(
    engine: tuple[TritonProcess, StartUp],
) -> None:
    states = engine[1].states
    assert states[-1] == "ready"
    assert set(states[:-1]) <= {"EngineUnavailable", "loading"}, states
    assert states[0] in {"EngineUnavailable", "loading"}, "the first probe cannot be ready"


async def test_props_come_from_triton_and_the_engine(adapter: TritonAdapter, model: Path) -> None:
    props = await adapter.props()
    assert props.engine == "triton"
    assert props.engine_version.startswith("triton 2.")
    assert "llama-cpp-python 0.3.36" in props.engine_version
    assert (props.ctx, props.slots_total, props.model_path) == (CTX, 1, str(model))
    assert props.chat_template and props.features == {"completion", "chat"}


# -- generation ---------------------------------------------------------------------------


async def test_a_generation_streams_started_tokens_and_end_at_max_tokens(
    adapter: TritonAdapter,
) -> None:
    events = await run(adapter, completion("gen", 24, seed=7))
    started, *tokens, end = events
    assert isinstance(started, Started) and started.tokens_in > 0
    assert tokens and all(isinstance(t, Token) and t.text for t in tokens)
    assert isinstance(end, End), end
    assert (end.tokens_out, end.finish_reason) == (24, "length")
    assert sum(t.tokens for t in tokens if isinstance(t, Token)) <= 24
    assert end.ttft_ms > 0 and end.decode_time_ms >= 0


async def test_two_concurrent_requests_both_complete_with_their_own_text(
    adapter: TritonAdapter,
) -> None:
    alone = await run(adapter, completion("solo", 32, seed=11))
    first, second = await asyncio.gather(
        run(adapter, completion("pair-a", 32, seed=11)),
        run(adapter, completion("pair-b", 32, seed=12)),
    )
    for events in (first, second):
        assert isinstance(events[-1], End) and events[-1].tokens_out == 32, events[-1]
    assert text_of(first) == text_of(alone), "the same seed must give the same text"
    assert text_of(second) != text_of(first)


async def test_a_stop_string_ends_the_text_before_it_with_finish_stop(
    adapter: TritonAdapter,
) -> None:
    reference = text_of(await run(adapter, completion("ref", 48, seed=3)))
    stop = next(
        reference[i : i + 2]
        for i in range(4, len(reference) - 2)
        if "\ufffd" not in reference[i : i + 2] and reference[i : i + 2].strip()
    )
    events = await run(adapter, completion("stop", 48, seed=3, stop=(stop,)))
    end = events[-1]
    assert isinstance(end, End) and end.finish_reason == "stop", end
    assert text_of(events) == reference[: reference.index(stop)]


async def test_a_chat_request_is_rendered_by_the_models_template(adapter: TritonAdapter) -> None:
    request = GenerateRequest("chat", Sampling(8, seed=1), messages=(ChatTurn("user", "hi"),))
    events = await run(adapter, request)
    assert isinstance(events[0], Started) and events[0].tokens_in > 3  # the template's tokens
    assert isinstance(events[-1], End) and events[-1].tokens_out == 8


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_mid_stream_stops_the_engine_and_it_serves_the_next_request(
    adapter: TritonAdapter,
) -> None:
    before = await engine_idle(adapter)
    stream = adapter.submit(completion("cancel-me", LONG))
    seen = [await anext(stream)]
    while sum(isinstance(e, Token) for e in seen) < 2:
        seen.append(await asyncio.wait_for(anext(stream), BOUND_S))
    await adapter.cancel("cancel-me")
    after = await asyncio.wait_for(_drain(stream), CANCEL_REACHES_ENGINE_S)
    assert [type(e) for e in after] == [Failed], after
    assert isinstance(after[0], Failed) and after[0].code == "CANCELLED"
    stats = await engine_idle(adapter)
    assert stats["generations_cancelled_total"] == int(before["generations_cancelled_total"]) + 1
    decoded = int(stats["tokens_generated_total"]) - int(before["tokens_generated_total"])
    assert decoded < LONG, "the engine decoded to the end despite the cancel"
    assert (await adapter.stats())["tokens_generated_total"] == stats["tokens_generated_total"]
    await adapter.cancel("cancel-me")  # idempotent
    events = await run(adapter, completion("after-cancel", 4))
    assert isinstance(events[-1], End) and events[-1].tokens_out == 4


async def test_closing_the_stream_early_stops_the_engine_too(adapter: TritonAdapter) -> None:
    before = await engine_idle(adapter)
    stream = adapter.submit(completion("walk-away", LONG))
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, Token):
                break
    stats = await engine_idle(adapter)
    assert stats["generations_cancelled_total"] == int(before["generations_cancelled_total"]) + 1


# -- errors ---------------------------------------------------------------------------------


async def test_a_refused_parameter_arrives_as_an_error_frame_under_http_200(
    engine: tuple[TritonProcess, StartUp],
) -> None:
    url = f"http://{engine[0].address}/v2/models/llm/generate_stream"
    body = {"text_input": "hi", "max_tokens": 4, "temperature": -1.0}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        frames = [line async for line in response.content if line.startswith(b"data: ")]
    assert b'"event":"start"' in frames[0]
    assert b'"error"' in frames[-1] and b"RequestRefused: INVALID_PARAMS" in frames[-1]


async def test_error_frames_become_typed_failures(adapter: TritonAdapter) -> None:
    refused = await run(adapter, completion("bad-temp", 4, temperature=-1.0))
    assert isinstance(refused[0], Started)
    failure = refused[-1]
    assert isinstance(failure, Failed) and failure.code == "INVALID_PARAMS", failure
    assert not failure.retriable and failure.before_first_token
    overflow = await run(adapter, completion("too-long", CTX))
    failure = overflow[-1]
    assert isinstance(failure, Failed) and failure.code == "CONTEXT_OVERFLOW", failure


async def test_a_grammar_fails_closed_without_reaching_the_engine(adapter: TritonAdapter) -> None:
    before = await adapter.stats()
    events = await run(adapter, completion("grammar", 4, grammar='root ::= "a"'))
    assert len(events) == 1 and isinstance(events[0], Failed), events
    assert events[0].code == "UNSUPPORTED_PARAM" and not events[0].retriable
    assert (await adapter.stats())["generations_total"] == before["generations_total"]


# -- a private engine that dies mid-answer ---------------------------------------------------


async def test_an_engine_killed_mid_stream_is_worker_reset(
    prepared: PreparedEngine, model: Path, tmp_path: Path
) -> None:
    process = await asyncio.to_thread(start_engine, prepared, model, tmp_path)
    victim = TritonAdapter(Endpoint(process.address))
    try:
        await health_until_ready(victim)
        stream = victim.submit(completion("doomed", LONG))
        seen = [await anext(stream)]
        while not any(isinstance(e, Token) for e in seen):
            seen.append(await asyncio.wait_for(anext(stream), BOUND_S))
        await asyncio.to_thread(process.kill)
        rest = await asyncio.wait_for(_drain(stream), BOUND_S)
        failure = rest[-1]
        assert isinstance(failure, Failed) and failure.code == "WORKER_RESET", rest[-3:]
        assert failure.retriable and not failure.before_first_token
    finally:
        await victim.close()
        await asyncio.to_thread(process.stop)


async def _drain(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]
