"""Traces (OBS-03): one job's trace spans orchestratord, its adapter and the worker
process, continuing the client's `traceparent`, with W3C context over HTTP and gRPC.

Every process of the cluster (and the workers their pool manager starts) inherits
`LLORCH_TRACE_FILE` and appends its finished spans to that one file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from ci_harness.otlp import GrpcReceiver, HttpReceiver

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
OPENAI_TRACE_ID = "5cf92f3577b34da6a3ce929d0e0e4737"
OPENAI_SPAN_ID = "11f067aa0ba902b8"
EXPECTED = {
    "task",
    "admission",
    "placement",
    "dispatch",
    "engine.generate",
    "worker.generate",
    "prefill",
    "decode",
}


def _trace(path: Path, trace_id: str) -> dict[str, dict[str, Any]]:
    """The spans of one trace written so far, by name (each name occurs once per job)."""
    if not path.exists():
        return {}
    # Three processes append to the file: a last line without its newline is still
    # being written (read it on the next poll).
    complete = path.read_text().rpartition("\n")[0]
    spans = [json.loads(line) for line in complete.splitlines() if line]
    return {s["name"]: s for s in spans if s["trace_id"] == trace_id}


def test_one_jobs_trace_covers_orchestrator_adapter_and_worker_with_correct_parentage(
    cluster_factory: Factory, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv("LLORCH_TRACE_FILE", str(spans_file))
    cluster = cluster_factory({"host-a": [tiny_pool("p1", tiny_model)]})

    reply = cluster.submit(
        {"model": "default", "prompt": "trace me", "max_tokens": 4},
        traceparent=f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01",
    )
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    assert cluster.events(task_id)[-1].name == "end"

    spans = wait_for(
        lambda: (found := _trace(spans_file, CLIENT_TRACE_ID)).keys() >= EXPECTED and found,
        "the job's spans from every process",
    )
    task, dispatch = spans["task"], spans["dispatch"]
    engine, worker = spans["engine.generate"], spans["worker.generate"]
    assert task["parent_span_id"] == CLIENT_SPAN_ID and task["kind"] == "SERVER"
    for child in ("admission", "placement", "dispatch"):
        assert spans[child]["parent_span_id"] == task["span_id"], child
    assert engine["parent_span_id"] == dispatch["span_id"] and engine["kind"] == "CLIENT"
    assert worker["parent_span_id"] == engine["span_id"] and worker["kind"] == "SERVER"
    assert spans["prefill"]["parent_span_id"] == spans["decode"]["parent_span_id"]
    assert spans["decode"]["parent_span_id"] == worker["span_id"]

    services = {name: span["service"] for name, span in spans.items()}
    orchestrator_side = ("task", "admission", "placement", "dispatch", "engine.generate")
    assert {services[n] for n in orchestrator_side} == {"orchestratord"}
    assert {services[n] for n in ("worker.generate", "prefill", "decode")} == {"llorch-worker"}

    assert task["attrs"]["llorch.task_id"] == task_id
    assert task["attrs"]["llorch.state"] == "completed" and task["status"] != "ERROR"
    assert dispatch["attrs"]["llorch.pool_id"] == "p1"
    events = {e["name"]: e["time_ns"] for e in task["events"]}
    assert task["start_ns"] <= events["first_token"] <= events["end"] <= task["end_ns"]
    assert worker["start_ns"] <= events["first_token"]  # the token came from the worker

    def started_lines() -> list[dict[str, Any]]:  # written a moment after they are logged
        log = (cluster.root / "orchestratord.log").read_text().splitlines()
        return [
            line
            for line in map(json.loads, log)
            if line.get("task_id") == task_id and line.get("action") == "stream.start"
        ]

    started = wait_for(started_lines, "the stream.start line", timeout_s=10)
    assert [line.get("trace_id") for line in started] == [CLIENT_TRACE_ID]


def test_the_openai_facade_continues_the_clients_trace(
    cluster_factory: Factory, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv("LLORCH_TRACE_FILE", str(spans_file))
    cluster = cluster_factory({"host-a": [tiny_pool("p1", tiny_model)]})
    with cluster.client() as client:
        reply = client.post(
            "/v1/completions",
            json={"model": "default", "prompt": "hi", "max_tokens": 2},
            headers={"traceparent": f"00-{OPENAI_TRACE_ID}-{OPENAI_SPAN_ID}-01"},
        )
    assert reply.status_code == 200, reply.text
    spans = wait_for(
        lambda: (found := _trace(spans_file, OPENAI_TRACE_ID)).keys() >= EXPECTED and found,
        "the completion's spans",
    )
    assert spans["task"]["parent_span_id"] == OPENAI_SPAN_ID
    assert spans["worker.generate"]["parent_span_id"] == spans["engine.generate"]["span_id"]


@pytest.mark.parametrize(
    ("protocol", "route"),
    [("grpc", "/v1/chat/completions"), ("http/protobuf", "/v1/completions")],
)
def test_otlp_export_carries_the_service_name_and_gen_ai_attributes(
    cluster_factory: Factory,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    route: str,
) -> None:
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()  # bound, not serving
    monkeypatch.setenv("OTEL_SERVICE_NAME", "llorch-front-door")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms: export without waiting 5 s
    cluster = cluster_factory({"host-a": [tiny_pool("p1", tiny_model)]})
    body: dict[str, Any] = {"model": "default", "max_tokens": 3, "temperature": 0.5}
    if route == "/v1/completions":
        body["prompt"] = "hello"
    else:
        body["messages"] = [{"role": "user", "content": "hello"}]
    with receiver:
        with cluster.client() as client:
            reply = client.post(route, json=body)
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
        spans = receiver.wait_for(
            lambda spans: any(s.name == "task" for s in spans), "the task span over OTLP"
        )
    (task,) = [s for s in spans if s.name == "task"]
    assert task.service == "llorch-front-door"
    attrs = task.attributes
    assert attrs["gen_ai.operation.name"] == (
        "text_completion" if route == "/v1/completions" else "chat"
    )
    assert attrs["gen_ai.provider.name"] == "llorch"
    assert attrs["gen_ai.request.model"] == "default"
    assert attrs["gen_ai.response.model"] == cluster.pool("p1")["model_id"]
    assert attrs["gen_ai.request.max_tokens"] == 3
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ["length"]
    assert "gen_ai.system" not in attrs  # the current name is gen_ai.provider.name
