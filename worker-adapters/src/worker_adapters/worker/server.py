"""The worker gRPC service over an `EngineBackend` (WRK-01).

Every call checks the per-pool API key when one is configured (SEC-02), compared in
constant time. `Generate` streams the backend's events; when the client goes away
(cancel or disconnect) the backend generator is closed, which stops generation between
two tokens. Request-level failures of unary calls are `INVALID_ARGUMENT` or
`FAILED_PRECONDITION` with details `CODE: message`, where CODE is an API-07 code.
With tracing on (OBS-03), `Generate` is a server span whose parent is the caller's
`traceparent` metadata, with `prefill` and `decode` children.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import grpc
from specs.worker.v1 import worker_pb2 as pb
from specs.worker.v1 import worker_pb2_grpc

from specs import tracing
from worker_adapters._trace import traced_generation
from worker_adapters.engine import EngineBackend
from worker_adapters.errors import RequestRejected
from worker_adapters.native.translate import (
    event_to_wire,
    health_to_wire,
    props_to_wire,
    request_from_wire,
)

__all__ = ["WorkerServicer"]


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, backend: EngineBackend, api_key: str = "") -> None:
        self._backend = backend
        self._expected = f"Bearer {api_key}".encode() if api_key else b""

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        if not self._expected:
            return
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(str(presented).encode(), self._expected):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHORIZED: bad or missing key")

    async def Generate(  # noqa: N802 - gRPC method name
        self,
        request: pb.GenerateRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[pb.GenerateEvent]:
        await self._authorize(context)
        events = self._backend.generate(request_from_wire(request))
        if tracing.enabled():  # once per job; the untraced stream has no wrapper
            events = traced_generation(events, context.invocation_metadata(), request.job_id)
        try:
            async for event in events:
                yield event_to_wire(event)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def Cancel(  # noqa: N802
        self,
        request: pb.CancelRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.CancelReply:
        await self._authorize(context)
        return pb.CancelReply(found=self._backend.cancel(request.job_id))

    async def Health(  # noqa: N802
        self,
        request: pb.HealthRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.HealthReply:
        await self._authorize(context)
        return health_to_wire(self._backend.health())

    async def Props(  # noqa: N802
        self,
        request: pb.PropsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.PropsReply:
        await self._authorize(context)
        return props_to_wire(self._backend.props())

    async def Tokenize(  # noqa: N802
        self,
        request: pb.TokenizeRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.TokenizeReply:
        await self._authorize(context)
        try:
            result = await self._backend.tokenize(request.text, with_offsets=request.with_offsets)
        except RequestRejected as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
        return pb.TokenizeReply(ids=list(result.ids), byte_offsets=list(result.byte_offsets))

    async def Detokenize(  # noqa: N802
        self,
        request: pb.DetokenizeRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.DetokenizeReply:
        await self._authorize(context)
        try:
            text = await self._backend.detokenize(tuple(request.ids))
        except RequestRejected as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
        return pb.DetokenizeReply(text=text)

    async def Embed(  # noqa: N802
        self,
        request: pb.EmbedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.EmbedReply:
        await self._authorize(context)
        try:
            vectors = await self._backend.embed(tuple(request.inputs))
        except RequestRejected as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
        return pb.EmbedReply(embeddings=[pb.Embedding(values=list(v)) for v in vectors])
