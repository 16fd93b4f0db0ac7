"""`NativeAdapter`: the gRPC client of `llorch worker` (ADP-01, ADP-02 `native`).

One channel per worker endpoint, shared by all its jobs. A generation is one
server-streaming `Generate` call; the stream is checked for protocol order (Started
first, Token*, then one End or Error) and any violation ends the job with a typed
`Failed` instead of being passed on (ADP-03). gRPC errors are mapped here, once:
UNAVAILABLE (worker gone) is `WORKER_RESET` with `engine_lost`, DEADLINE_EXCEEDED is
`DECODE_TIMEOUT`, and so is a stream that yields nothing for `stall_timeout_s`. A unary
call (tokenize, detokenize, ...) on a channel closed under it (the replica was unbound)
is `EngineUnavailable`, never a bare `CancelledError`. Cancel
sends the worker's `Cancel` RPC and closes the stream, so the worker stops between two
tokens (ADP-04). With tracing on (OBS-03) a generation is a client span whose W3C
`traceparent` travels in the call's gRPC metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import grpc
from specs.worker.v1 import worker_pb2 as pb
from specs.worker.v1 import worker_pb2_grpc

from specs import tracing
from worker_adapters._trace import engine_span, traced_stream
from worker_adapters.errors import EngineTimeout, EngineUnavailable, RequestRejected
from worker_adapters.native.translate import (
    event_from_wire,
    health_from_wire,
    props_from_wire,
    request_to_wire,
)
from worker_adapters.protocol import Endpoint, one_per_batch, register
from worker_adapters.types import (
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Started,
    StreamEvent,
    Token,
    Tokenized,
)

__all__ = ["NativeAdapter", "rpc_error_code"]

RequestT = TypeVar("RequestT")
ReplyT = TypeVar("ReplyT")

_CONTROL_TIMEOUT_S = 5.0
_MAX_WIRE_ID = 2**32 - 1  # token ids are uint32 on the worker wire
# A backstop: the orchestrator's watchdog (ADM-06) normally ends a stalled job first.
DEFAULT_STALL_TIMEOUT_S = 300.0
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 << 20),
)


def _channel(endpoint: Endpoint) -> grpc.aio.Channel:
    """Plaintext, or TLS checking the worker's certificate for the dialled host (or the
    endpoint's `server_name`) and presenting a client certificate when one is given."""
    tls = endpoint.tls
    if tls is None:
        return grpc.aio.insecure_channel(endpoint.address, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem or None,
        private_key=tls.key_pem or None,
        certificate_chain=tls.cert_pem or None,
    )
    options: tuple[tuple[str, str | int], ...] = _CHANNEL_OPTIONS
    if tls.server_name:
        options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(endpoint.address, credentials, options=options)


def rpc_error_code(details: str | None) -> tuple[str, str]:
    """Split a worker error's details `CODE: message` into (code, message)."""
    text = details or ""
    code, sep, message = text.partition(": ")
    if sep and code.isupper() and code.replace("_", "").isalpha():
        return code, message
    return "ENGINE_ERROR", text


class NativeAdapter:
    kind = "native"

    def __init__(
        self, endpoint: Endpoint, *, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    ) -> None:
        self._endpoint = endpoint
        self._stall_timeout_s = stall_timeout_s
        self._channel = _channel(endpoint)
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        self._metadata: Sequence[tuple[str, str]] = (
            (("authorization", f"Bearer {endpoint.api_key}"),) if endpoint.api_key else ()
        )
        self._cancelled: set[str] = set()
        self._calls: dict[str, grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateEvent]] = {}

    def submit(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        span = engine_span(self.kind, request.job_id, self._endpoint.address)
        if span is None:  # tracing off: no wrapper on the token path
            return self._generate(request, self._metadata)
        metadata = (*self._metadata, *tracing.inject(span).items())
        return traced_stream(self._generate(request, metadata), span)

    def submit_batches(self, request: GenerateRequest) -> AsyncIterator[Sequence[StreamEvent]]:
        return one_per_batch(self.submit(request))

    async def _generate(
        self, request: GenerateRequest, metadata: Sequence[tuple[str, str]]
    ) -> AsyncIterator[StreamEvent]:
        call = self._stub.Generate(request_to_wire(request), metadata=metadata)
        self._calls[request.job_id] = call
        started = tokens_seen = finished = False
        try:
            while True:
                async with asyncio.timeout(self._stall_timeout_s):
                    wire = await call.read()
                if not isinstance(wire, pb.GenerateEvent):
                    break  # grpc.aio.EOF
                event = event_from_wire(wire, tokens_seen=tokens_seen)
                problem = _order_problem(event, started, finished)
                if problem:
                    finished = True
                    yield Failed(
                        "ENGINE_ERROR", f"malformed worker stream: {problem}", True, not tokens_seen
                    )
                    return
                started = started or isinstance(event, Started)
                tokens_seen = tokens_seen or isinstance(event, Token)
                finished = isinstance(event, End | Failed)
                assert event is not None
                yield event
                if finished:
                    return
            finished = True
            yield Failed(
                "WORKER_RESET",
                "worker stream ended without a terminal event",
                True,
                not tokens_seen,
                engine_lost=True,
            )
        except grpc.aio.AioRpcError as exc:
            finished = True
            yield _failure(exc, tokens_seen)
        except TimeoutError:
            message = f"worker produced nothing for {self._stall_timeout_s} s"
            yield Failed("DECODE_TIMEOUT", message, True, not tokens_seen)
        except asyncio.CancelledError:
            if request.job_id not in self._cancelled:
                raise  # the consumer's task was cancelled, not this job
            finished = True
            yield Failed("CANCELLED", "generation cancelled", False, not tokens_seen)
        finally:
            self._cancelled.discard(request.job_id)
            self._calls.pop(request.job_id, None)
            if not finished:
                call.cancel()

    async def cancel(self, job_id: str) -> None:
        call = self._calls.get(job_id)
        if call is not None:
            self._cancelled.add(job_id)
        with contextlib.suppress(grpc.aio.AioRpcError):  # closing the stream still stops it
            await self._stub.Cancel(
                pb.CancelRequest(job_id=job_id), metadata=self._metadata, timeout=_CONTROL_TIMEOUT_S
            )
        if call is not None:
            call.cancel()

    async def health(self) -> EngineHealth:
        reply = await self._unary(self._stub.Health, pb.HealthRequest())
        return health_from_wire(reply)

    async def props(self) -> EngineProps:
        return props_from_wire(await self._unary(self._stub.Props, pb.PropsRequest()))

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        reply = await self._unary(
            self._stub.Tokenize, pb.TokenizeRequest(text=text, with_offsets=with_offsets)
        )
        return Tokenized(tuple(reply.ids), tuple(reply.byte_offsets))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        wrong = next((i for i, t in enumerate(ids) if not 0 <= t <= _MAX_WIRE_ID), None)
        if wrong is not None:  # the wire carries uint32: refuse before building it
            raise RequestRejected(
                "INVALID_PARAMS", f"tokens[{wrong}]: {ids[wrong]} is not a token id"
            )
        reply = await self._unary(self._stub.Detokenize, pb.DetokenizeRequest(ids=list(ids)))
        return str(reply.text)

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        reply = await self._unary(self._stub.Embed, pb.EmbedRequest(inputs=list(inputs)))
        return tuple(tuple(e.values) for e in reply.embeddings)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def _unary(
        self, method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ReplyT], request: RequestT
    ) -> ReplyT:
        try:
            return await method(request, metadata=self._metadata, timeout=_CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _control_error(exc) from exc
        except grpc.aio.UsageError as exc:  # the channel was closed before the call
            raise EngineUnavailable(f"worker channel closed: {exc}") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller is being cancelled: not an engine failure
            # Closing the channel (the replica was unbound: its worker died or left)
            # cancels the calls in flight on it; to the caller the worker is gone.
            raise EngineUnavailable("worker channel closed during the call") from None


def _order_problem(event: StreamEvent | None, started: bool, finished: bool) -> str:
    if event is None:
        return "event without payload"
    if finished:
        return "event after the terminal event"
    if isinstance(event, Started):
        return "second Started" if started else ""
    if not started and not isinstance(event, Failed):
        return f"{type(event).__name__} before Started"
    return ""


def _failure(exc: grpc.aio.AioRpcError, tokens_seen: bool) -> Failed:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failed("DECODE_TIMEOUT", "worker did not answer in time", True, not tokens_seen)
    if code == grpc.StatusCode.CANCELLED:
        return Failed("CANCELLED", "generation cancelled", False, not tokens_seen)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        error_code, message = rpc_error_code(exc.details())
        return Failed(error_code, message, False, not tokens_seen)
    lost = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    return Failed(
        "WORKER_RESET",
        f"worker connection failed: {code.name}",
        True,
        not tokens_seen,
        engine_lost=lost,
    )


def _control_error(exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EngineTimeout("worker did not answer in time")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return RequestRejected(*rpc_error_code(exc.details()))
    return EngineUnavailable(f"worker unavailable: {code.name}")


register("native", NativeAdapter)
