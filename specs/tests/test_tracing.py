"""Tracing setup and W3C propagation (OBS-03): off by default, file and OTLP exporters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ci_harness.otlp import GrpcReceiver
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from specs import tracing

CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"
CLIENT_PARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"


@pytest.fixture
def trace_file(tmp_path: Path) -> Iterator[Path]:
    """Tracing on in this process, writing JSON lines to a fresh file; off afterwards."""
    path = tmp_path / "spans.jsonl"
    assert tracing.setup_tracing("unit", {tracing.TRACE_FILE_ENV: str(path)})
    yield path
    tracing.shutdown_tracing()


def _spans(path: Path) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in map(json.loads, path.read_text().splitlines())}


def test_tracing_off_by_default_loads_no_sdk_and_creates_no_exporter() -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", tracing.TRACE_FILE_ENV))
    }
    script = (
        "import sys; from specs import tracing; "
        "on = tracing.setup_tracing('probe'); "
        "loaded = sorted(m for m in sys.modules "
        "if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))); "
        "print(on, tracing.enabled(), loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False False []"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_tracing_stays_off_unless_an_exporter_is_configured(environ: dict[str, str]) -> None:
    assert tracing.setup_tracing("unit", environ) is False
    assert not tracing.enabled()


def test_an_unknown_exporter_is_a_typed_configuration_error() -> None:
    with pytest.raises(tracing.TracingConfigError, match="zipkin"):
        tracing.setup_tracing("unit", {"OTEL_TRACES_EXPORTER": "otlp,zipkin"})
    assert not tracing.enabled()


def test_spans_join_the_clients_trace_and_propagate_their_own_parent(trace_file: Path) -> None:
    root = tracing.start_span(
        "root",
        kind=tracing.SpanKind.SERVER,
        parent=tracing.extract({"TraceParent": CLIENT_PARENT}),
        attributes={"llorch.task_id": "t1"},
    )
    child = tracing.start_span("child", parent=tracing.context_with(root))
    header = tracing.inject(child)["traceparent"]
    child.add_event("first_token", {"n": 1})
    child.end()
    root.end()

    spans = _spans(trace_file)
    assert tracing.trace_id_of(root) == CLIENT_TRACE_ID
    assert spans["root"]["trace_id"] == spans["child"]["trace_id"] == CLIENT_TRACE_ID
    assert spans["root"]["parent_span_id"] == CLIENT_SPAN_ID
    assert spans["child"]["parent_span_id"] == spans["root"]["span_id"]
    assert header == f"00-{CLIENT_TRACE_ID}-{spans['child']['span_id']}-01"
    assert spans["root"]["service"] == "unit"
    assert spans["root"]["kind"] == "SERVER"
    assert spans["root"]["attrs"] == {"llorch.task_id": "t1"}
    assert [e["name"] for e in spans["child"]["events"]] == ["first_token"]


@pytest.mark.parametrize("carrier", [None, {}, {"traceparent": "00-zz-not-a-parent-01"}])
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(
    trace_file: Path, carrier: dict[str, str] | None
) -> None:
    span = tracing.start_span("fresh", parent=tracing.extract(carrier))
    span.end()
    record = _spans(trace_file)["fresh"]
    assert record["parent_span_id"] is None
    assert record["trace_id"] != CLIENT_TRACE_ID


def test_grpc_metadata_pairs_carry_the_parent(trace_file: Path) -> None:
    metadata = (("authorization", "Bearer k"), ("traceparent", CLIENT_PARENT))
    span = tracing.start_span("server", parent=tracing.extract(metadata))
    span.end()
    assert _spans(trace_file)["server"]["parent_span_id"] == CLIENT_SPAN_ID


def test_a_task_context_makes_the_span_current_only_inside_it(trace_file: Path) -> None:
    outer = tracing.start_span("dispatch")
    context = tracing.task_context(outer)
    inner = context.run(tracing.start_span, "adapter")  # no explicit parent: the current
    orphan = tracing.start_span("elsewhere")
    for span in (inner, orphan, outer):
        span.end()
    spans = _spans(trace_file)
    assert spans["adapter"]["parent_span_id"] == spans["dispatch"]["span_id"]
    assert spans["elsewhere"]["parent_span_id"] is None


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_otlp_export_posts_the_spans_to_the_configured_collector() -> None:
    received: list[tuple[str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        assert tracing.setup_tracing("otlp-unit", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        tracing.start_span("exported").end()
        tracing.shutdown_tracing()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in received] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(received[0][1])
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "otlp-unit"
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert names == ["exported"]


def test_otel_service_name_names_the_service(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    env = {tracing.TRACE_FILE_ENV: str(path), "OTEL_SERVICE_NAME": "front-door"}
    assert tracing.setup_tracing("orchestratord", env)
    tracing.start_span("named").end()
    tracing.shutdown_tracing()
    assert _spans(path)["named"]["service"] == "front-door"


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_unsupported_otlp_protocol_is_a_typed_configuration_error(
    environ: dict[str, str],
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", **environ}
    with pytest.raises(tracing.TracingConfigError, match="protocol"):
        tracing.setup_tracing("unit", env)
    assert not tracing.enabled()


def test_otlp_over_grpc_exports_to_the_configured_collector() -> None:
    with GrpcReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "grpc-unit",
        }
        assert tracing.setup_tracing("unit", env)
        tracing.start_span("over-grpc", attributes={"gen_ai.request.max_tokens": 3}).end()
        tracing.shutdown_tracing()  # flushes the batch
        (span,) = receiver.spans
    assert (span.service, span.name) == ("grpc-unit", "over-grpc")
    assert span.attributes == {"gen_ai.request.max_tokens": 3}


def test_the_grpc_protocol_names_the_signal_endpoint_first_and_keeps_the_path() -> None:
    with GrpcReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        }
        assert tracing.setup_tracing("unit", env)
        tracing.start_span("signal-endpoint").end()
        tracing.shutdown_tracing()
        assert [s.name for s in receiver.spans] == ["signal-endpoint"]
