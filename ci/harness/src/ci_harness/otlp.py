"""Real OTLP trace receivers for tests (OBS-03): what an OpenTelemetry collector would
receive from llorch's processes, over gRPC (the collector's `TraceService`, served by
grpcio) and over HTTP/protobuf (`POST /v1/traces`).

    receiver = GrpcReceiver()       # bound: receiver.endpoint is http://127.0.0.1:PORT
    ... start daemons with OTEL_EXPORTER_OTLP_PROTOCOL=grpc,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
    with receiver:                  # serving (its threads start here)
        spans = receiver.wait_for(lambda spans: ..., "what")

A receiver binds its port when made and starts its threads only when entered, so a test
can start its daemons (fork and exec) before any receiver thread runs.

Each received span is flattened to a `ReceivedSpan` (its service, name, ids, kind and
attributes as Python values), in arrival order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ci_harness.cluster import wait_for

__all__ = ["GrpcReceiver", "HttpReceiver", "ReceivedSpan"]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _spans(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                yield ReceivedSpan(
                    service=str(resource.get("service.name", "")),
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                )


class _Receiver:
    """The spans received so far, under a lock (the servers' threads append)."""

    endpoint: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0

    def received(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            self._spans.extend(_spans(request))

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], what: str, timeout_s: float = 30.0
    ) -> list[ReceivedSpan]:
        """The spans received, once `done` holds for them (fails after `timeout_s`)."""
        spans: list[ReceivedSpan] = wait_for(
            lambda: (seen := self.spans) and done(seen) and seen, what, timeout_s
        )
        return spans


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: _Receiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802  (the generated servicer's name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.received(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver(_Receiver):
    """An OTLP/gRPC collector on loopback (no TLS): `endpoint` is `http://127.0.0.1:PORT`."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = futures.ThreadPoolExecutor(max_workers=2)
        self._server = grpc.server(self._executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), self._server
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"

    def __enter__(self) -> GrpcReceiver:
        self._server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=None).wait(10)
        self._executor.shutdown(wait=True)


class HttpReceiver(_Receiver):
    """An OTLP/HTTP collector on loopback: `endpoint` is the base URL (the exporter
    appends `/v1/traces`); a POST to another path is answered 404 and not recorded."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.received(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
