"""Trace context from the adapters to the engines (OBS-03): HTTP adapters send their
client span as `traceparent`; the native adapter sends it in gRPC metadata and the
worker's server span (with prefill and decode children) continues the same trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from specs.worker.v1 import worker_pb2_grpc
from worker_adapters import End, Endpoint, Failed, GenerateRequest, Sampling, StreamEvent
from worker_adapters.mock import MockBackend, MockKnobs
from worker_adapters.native import NativeAdapter
from worker_adapters.protocol import Adapter
from worker_adapters.testing.scenarios import Arranged, Scenario
from worker_adapters.testing.targets import fake_http_target
from worker_adapters.worker.server import WorkerServicer

from specs import tracing

pytestmark = pytest.mark.usefixtures("http_session")


@pytest.fixture
def spans_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    assert tracing.setup_tracing("adapter-test", {tracing.TRACE_FILE_ENV: str(path)})
    yield path
    tracing.shutdown_tracing()


def _spans(path: Path) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in map(json.loads, path.read_text().splitlines())}


async def _under_dispatch(adapter: Adapter, request: GenerateRequest) -> list[StreamEvent]:
    """Run the generation in a task whose current span is `dispatch`, as the orchestrator
    runs each attempt."""
    dispatch = tracing.start_span("dispatch")

    async def consume() -> list[StreamEvent]:
        return [event async for event in adapter.submit(request)]

    loop = asyncio.get_running_loop()
    events = await loop.create_task(consume(), context=tracing.task_context(dispatch))
    dispatch.end()
    return events


@pytest.mark.parametrize("kind", ["llamacpp", "openai", "vllm", "tgi"])
async def test_http_adapters_send_their_client_span_as_traceparent(
    kind: str, spans_file: Path
) -> None:
    async with fake_http_target(kind) as target:
        arranged = await target.arrange(Scenario.COMPLETES, "job-1")
        assert isinstance(arranged, Arranged)
        events = await _under_dispatch(target.adapter, arranged.request)
        headers = target.fake.seen("job-1").headers
    spans = _spans(spans_file)
    engine = spans["engine.generate"]
    assert engine["parent_span_id"] == spans["dispatch"]["span_id"]
    assert engine["trace_id"] == spans["dispatch"]["trace_id"]
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", engine["trace_id"], engine["span_id"])
    assert int(flags, 16) & 1  # sampled
    assert engine["kind"] == "CLIENT" and engine["attrs"]["llorch.engine_kind"] == kind
    assert engine["attrs"]["llorch.job_id"] == "job-1"
    end = events[-1]
    assert isinstance(end, End) and engine["attrs"]["gen_ai.usage.output_tokens"] == end.tokens_out


async def test_with_tracing_off_the_stream_is_unwrapped_and_sends_no_traceparent() -> None:
    assert not tracing.enabled()
    async with fake_http_target("llamacpp") as target:
        arranged = await target.arrange(Scenario.COMPLETES, "job-off")
        assert isinstance(arranged, Arranged)
        stream = target.adapter.submit(arranged.request)
        assert stream.ag_code.co_name == "_submit"  # type: ignore[attr-defined]
        events = [event async for event in stream]
        assert isinstance(events[-1], End)
        assert "traceparent" not in target.fake.seen("job-off").headers


@pytest.fixture
async def worker() -> AsyncIterator[NativeAdapter]:
    """A worker gRPC server over the mock engine in this process, and its adapter."""
    backend = MockBackend(MockKnobs(token_delay_ms=1), incarnation=1)
    await backend.start()
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(backend), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    adapter = NativeAdapter(Endpoint(f"127.0.0.1:{port}"))
    try:
        yield adapter
    finally:
        await adapter.close()
        await server.stop(None)
        await backend.close()


async def test_the_workers_span_continues_the_native_adapters_trace(
    worker: NativeAdapter, spans_file: Path
) -> None:
    request = GenerateRequest("job-n", Sampling(max_tokens=4), prompt="hello")
    events = await _under_dispatch(worker, request)
    assert isinstance(events[-1], End)
    spans = _spans(spans_file)
    dispatch, engine = spans["dispatch"], spans["engine.generate"]
    server, prefill, decode = spans["worker.generate"], spans["prefill"], spans["decode"]
    assert engine["parent_span_id"] == dispatch["span_id"]
    assert server["parent_span_id"] == engine["span_id"] and server["kind"] == "SERVER"
    assert prefill["parent_span_id"] == decode["parent_span_id"] == server["span_id"]
    trace_ids = {s["trace_id"] for s in (dispatch, engine, server, prefill, decode)}
    assert trace_ids == {dispatch["trace_id"]}
    assert prefill["end_ns"] <= decode["start_ns"] <= decode["end_ns"] <= server["end_ns"]
    assert server["attrs"]["gen_ai.usage.output_tokens"] == events[-1].tokens_out == 4


async def test_a_failed_generation_marks_both_sides_with_its_error_code(
    worker: NativeAdapter, spans_file: Path
) -> None:
    request = GenerateRequest("job-f", Sampling(max_tokens=8), prompt="[[mock fail_after=2]]")
    events = await _under_dispatch(worker, request)
    failure = events[-1]
    assert isinstance(failure, Failed)
    spans = _spans(spans_file)
    for name in ("engine.generate", "worker.generate"):
        assert spans[name]["status"] == "ERROR"
        assert spans[name]["attrs"]["llorch.error_code"] == failure.code
