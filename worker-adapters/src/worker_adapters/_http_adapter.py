"""`HttpAdapterBase`: what the HTTP engine adapters share (ADP-01 over HTTP).

A subclass says, per request, which route to call with which body and which
`FrameDecoder` reads the answer (`plan`), or refuses the request up front with a
`Failed` (a constraint the engine cannot honour fails closed, INVALID_PARAMS, and never
runs unconstrained). The base turns that into the event stream through `StreamRunner`,
cancels and closes, makes control calls with error statuses mapped once
(`http_errors.control_error`), and discovers the served model name from `/v1/models`
for OpenAI-style routes (vLLM rejects unknown names), caching it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker_adapters._http import HttpClient, HttpSettings
from worker_adapters._relay import FrameDecoder, StreamRunner
from worker_adapters.errors import AdapterError, EngineStatusError, EngineUnavailable
from worker_adapters.http_errors import control_error, failure_from_transport
from worker_adapters.protocol import Endpoint
from worker_adapters.types import Failed, GenerateRequest, StreamEvent

__all__ = ["HttpAdapterBase", "StreamPlan", "unsupported"]


@dataclass(frozen=True, slots=True)
class StreamPlan:
    path: str
    body: Mapping[str, Any]
    decoder: FrameDecoder
    headers: Mapping[str, str] | None = None


def unsupported(engine: str, what: str) -> Failed:
    """Fail closed: the engine cannot honour `what` (e.g. a grammar)."""
    return Failed("INVALID_PARAMS", f"engine {engine!r} cannot honour {what}", False, True)


class HttpAdapterBase:
    kind = ""

    def __init__(
        self, endpoint: Endpoint, settings: HttpSettings | None = None, *, model: str = ""
    ) -> None:
        self._client = HttpClient(endpoint.address, endpoint.api_key, settings)
        self._runner = StreamRunner(self._client)
        self._model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r})"

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        raise NotImplementedError

    async def submit(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        try:
            plan = await self.plan(request)
        except AdapterError as exc:  # a control call of the plan failed (model, version)
            yield failure_from_transport(exc, tokens_seen=False)
            return
        if isinstance(plan, Failed):
            yield plan
            return
        events = self._runner.run(request.job_id, plan.path, plan.body, plan.decoder, plan.headers)
        async for event in events:
            yield event

    async def cancel(self, job_id: str) -> None:
        await self._runner.cancel(job_id)

    async def close(self) -> None:
        """Ends this adapter's open streams; the shared connection pool stays open."""
        self._runner.abort_all()

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        """OpenAI `/v1/embeddings` (vLLM, llama_cpp.server); overridden where it differs."""
        body = {"model": await self.served_model(), "input": list(inputs)}
        reply = await self.json("POST", "/v1/embeddings", body)
        rows = sorted(reply.get("data") or (), key=lambda row: int(row.get("index", 0)))
        return tuple(tuple(float(x) for x in row["embedding"]) for row in rows)

    # -- helpers for subclasses ----------------------------------------------------------

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        """A control call's JSON; error statuses raise the mapped adapter error."""
        reply = await self._client.call(method, path, body)
        try:
            return reply.json_or_raise()
        except EngineStatusError as exc:
            raise control_error(exc) from exc

    async def served_model(self) -> str:
        """The model name OpenAI routes need: given, or the first of `/v1/models`."""
        if not self._model:
            listing = await self.json("GET", "/v1/models")
            models: Sequence[Any] = listing.get("data") or () if isinstance(listing, dict) else ()
            if not models:
                raise EngineUnavailable("engine lists no model on /v1/models")
            self._model = str(models[0].get("id", ""))
        return self._model
