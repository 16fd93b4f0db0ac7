"""Traces (OBS-03): one process's tracing setup and the W3C trace-context helpers.

Off by default. `setup_tracing(service)` reads the environment once, at daemon start:

- `LLORCH_TRACE_FILE=/path.jsonl` appends every finished span as one JSON line
  (`trace_id`, `span_id`, `parent_span_id`, `name`, `kind`, `service`, `start_ns`,
  `end_ns`, `status`, `attrs`, `events`), one `write` per line on an `O_APPEND` file, so
  several processes can share the file. Written synchronously as each span ends (a few
  spans per job, never per token): meant for tests and debugging.
- OTLP when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and
  `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The
  protocol is `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`:
  `http/protobuf` (the default; a base endpoint gets `/v1/traces` appended, a traces
  endpoint is the full URL) or `grpc` (the endpoint as given, e.g.
  `http://collector:4317`; `http://` means no TLS). The exporter reads the other
  standard `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, compression,
  certificates) itself and is imported only then. Spans are batched off the event
  loop. `console` prints spans.
- `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` keep tracing off.
- `OTEL_SERVICE_NAME` names the process's service (`service.name`) in place of the
  daemon's own name.

When off, nothing is created or imported beyond the OpenTelemetry API: `enabled()` is
False and callers check it once per job, so the token path never touches a span. Child
processes inherit the configuration through their environment.

Trace context crosses processes as W3C `traceparent`/`tracestate`: HTTP headers towards
engine servers and from clients, gRPC metadata towards `llorch worker`. An unknown
exporter name or OTLP protocol raises `TracingConfigError` (a `ValueError`).
"""

from __future__ import annotations

import atexit
import contextvars
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

__all__ = [
    "TRACE_FILE_ENV",
    "Context",
    "Span",
    "SpanKind",
    "StatusCode",
    "TracingConfigError",
    "context_with",
    "enabled",
    "extract",
    "inject",
    "setup_tracing",
    "shutdown_tracing",
    "span_record",
    "start_span",
    "task_context",
    "trace_id_of",
]

TRACE_FILE_ENV = "LLORCH_TRACE_FILE"
_EXPORTERS = frozenset({"otlp", "console", "none"})
_PROTOCOLS = frozenset({"grpc", "http/protobuf"})
_PROPAGATOR = TraceContextTextMapPropagator()

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """The tracing environment names something this build cannot do."""


def enabled() -> bool:
    """Whether this process records spans. Check once per job, never per token."""
    return _tracer is not None


def setup_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Configure tracing for this process from `environ` (default: `os.environ`).

    Returns whether tracing is on. Called once per process, before serving; a second
    call replaces the first configuration (tests). Raises `TracingConfigError`."""
    env = os.environ if environ is None else environ
    exporters = _exporter_names(env)
    trace_file = env.get(TRACE_FILE_ENV, "")
    if not exporters and not trace_file:
        return False
    otlp = _otlp_target(env) if "otlp" in exporters else None
    global _tracer, _provider
    shutdown_tracing()
    service = env.get("OTEL_SERVICE_NAME", "").strip() or service
    _provider = _build_provider(service, exporters, trace_file, otlp)
    _tracer = _provider.get_tracer("llorch")
    return True


def shutdown_tracing() -> None:
    """Flush and stop this process's exporters; tracing is off afterwards. Runs at exit."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


atexit.register(shutdown_tracing)


def _exporter_names(env: Mapping[str, str]) -> frozenset[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return frozenset()
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    names = frozenset(n.strip().lower() for n in raw.split(",") if n.strip())
    unknown = names - _EXPORTERS
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(sorted(_EXPORTERS))}"
        )
    if "none" in names:
        return frozenset()
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return frozenset({"otlp"})
    return names


def _otlp_target(env: Mapping[str, str]) -> tuple[str, str | None]:
    """The OTLP protocol and traces endpoint, as the OpenTelemetry spec derives them
    (None: the exporter's default endpoint)."""
    raw = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    protocol = raw.strip().lower() or "http/protobuf"
    if protocol not in _PROTOCOLS:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {raw.strip()!r}; "
            f"supported: {', '.join(sorted(_PROTOCOLS))}"
        )
    signal = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if signal:
        return protocol, signal
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base:
        return protocol, None
    return protocol, base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"


def _build_provider(
    service: str,
    exporters: frozenset[str],
    trace_file: str,
    otlp: tuple[str, str | None] | None,
) -> TracerProvider:
    # The SDK is imported here, so a process with tracing off never loads it.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(_json_lines_exporter(trace_file)))
    if otlp is not None:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(*otlp)))
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def _otlp_exporter(protocol: str, endpoint: str | None) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def _json_lines_exporter(path: str) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        """Finished spans as JSON lines, appended with one `write` each."""

        def __init__(self) -> None:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if self._fd is None:
                return SpanExportResult.FAILURE
            for span in spans:
                os.write(self._fd, (json.dumps(span_record(span)) + "\n").encode())
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    return JsonLinesExporter()


def span_record(span: ReadableSpan) -> dict[str, object]:
    """The JSON-line form of a finished span (see the module docstring)."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attrs": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attrs": dict(e.attributes or {})}
            for e in span.events
        ],
    }


# -- spans and propagation -------------------------------------------------------------


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, str | int | float | bool | Sequence[str]] | None = None,
    start_ns: int | None = None,
) -> Span:
    """A started span (end it yourself); `parent` None means the current context.
    Only valid while `enabled()`; never made current here (no attach across awaits)."""
    assert _tracer is not None, "start_span called with tracing off"
    return _tracer.start_span(
        name, context=parent, kind=kind, attributes=attributes, start_time=start_ns
    )


def context_with(span: Span) -> Context:
    """A context whose current span is `span`: the parent argument for its children."""
    return trace.set_span_in_context(span, Context())


def inject(span: Span) -> dict[str, str]:
    """The W3C `traceparent` (and `tracestate`) naming `span` as the remote parent."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context_with(span))
    return carrier


def extract(carrier: Mapping[str, str] | Iterable[tuple[str, Any]] | None) -> Context:
    """The remote parent named by a W3C carrier: HTTP headers (any case) or gRPC
    metadata pairs. A missing or malformed `traceparent` gives an empty context (a new
    trace), as the W3C spec asks."""
    if carrier is None:
        return Context()
    pairs = carrier.items() if isinstance(carrier, Mapping) else carrier
    headers = {str(k).lower(): v for k, v in pairs if isinstance(v, str)}
    if "traceparent" not in headers:
        return Context()
    return _PROPAGATOR.extract(headers, context=Context())


def trace_id_of(span: Span) -> str:
    """The span's trace id as 32 hex digits."""
    return f"{span.get_span_context().trace_id:032x}"


def task_context(span: Span) -> contextvars.Context:
    """A copy of the caller's context in which `span` is current, for
    `loop.create_task(..., context=...)`: spans started in that task without an explicit
    parent (the adapters') become its children, and the caller's context is untouched."""
    copy = contextvars.copy_context()
    copy.run(otel_context.attach, context_with(span))
    return copy
