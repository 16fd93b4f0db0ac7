"""`TritonAdapter`: Triton Inference Server serving our llama.cpp engine model (`triton`
kind, ADP-02, §A5), over HTTP.

Streams: `POST /v2/models/{model}/generate_stream`, decoded by `triton.wire`, relayed
by the shared `StreamRunner` (stall deadline, WORKER_RESET on EOF without the model's
`end`, timings). A grammar, JSON schema or logprobs request is refused
(UNSUPPORTED_PARAM, the capability matrix's `triton` row): the model cannot constrain
or score.

Cancel (ADP-04): closing the connection is not enough with PyTriton 0.7.0 — Triton
cancels its request on disconnect, but PyTriton never tells the model callable, which
decodes on. So `cancel` closes the stream *and* calls the model's cancel model
(`POST /v2/models/{model}_cancel/generate {"request_id"}`), which stops decoding
between two tokens. Each submission gets its own engine request id (`job#attempt`), so
the engine's memory of cancelled ids never touches a re-queued attempt of the same
job. A stream that ends without `End` for any other reason (closed early by its
consumer, stalled) is cancelled at the engine the same way, in the background.

Health (KServe v2; Triton says "not ready" with 400, not 503): a refused connection is
`EngineUnavailable` (Triton opens its port only after its start-up load); server or
model ready 400 -> `loading` (PyTriton loads the engine's models one after another
while the server already answers, so a model not ready yet is not a failure: the
supervisor's start-up budget catches one that never loads); any other error status ->
`failed`; all 200 -> `ready`, busy count from the engine's own `generations_active`.
Props come from `/v2` (Triton's version), the model's metadata (its inputs) and the
`{model}_stats` model (context, chat template, llama-cpp-python version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from worker_adapters._http import HttpSettings
from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan
from worker_adapters.errors import AdapterError, EngineUnavailable, RequestRejected
from worker_adapters.protocol import Endpoint, register
from worker_adapters.triton.wire import TritonDecoder, generate_body
from worker_adapters.types import (
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    StreamEvent,
    Tokenized,
)

__all__ = ["DEFAULT_MODEL", "TritonAdapter"]

DEFAULT_MODEL = "llm"
_log = logging.getLogger(__name__)


class TritonAdapter(HttpAdapterBase):
    kind = "triton"
    engine_kind = "triton"

    def __init__(
        self, endpoint: Endpoint, settings: HttpSettings | None = None, *, model: str = ""
    ) -> None:
        super().__init__(endpoint, settings, model=model or DEFAULT_MODEL)
        self._live: dict[str, str] = {}  # job id -> engine request id of its open stream
        self._background: set[asyncio.Task[None]] = set()

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        return self._plan(request, request.job_id)

    def _plan(self, request: GenerateRequest, engine_request_id: str) -> StreamPlan | Failed:
        if (refused := self.refused(request)) is not None:
            return refused
        body = generate_body(request, engine_request_id)
        return StreamPlan(f"/v2/models/{self._model}/generate_stream", body, TritonDecoder())

    async def _submit(
        self, request: GenerateRequest, trace_headers: Mapping[str, str] | None
    ) -> AsyncIterator[StreamEvent]:
        engine_request_id = f"{request.job_id}#{secrets.token_hex(4)}"
        plan = self._plan(request, engine_request_id)
        if isinstance(plan, Failed):
            yield plan
            return
        self._live[request.job_id] = engine_request_id
        ended = False
        try:
            events = self._runner.run(
                request.job_id, plan.path, plan.body, plan.decoder, trace_headers
            )
            assert isinstance(events, AsyncGenerator)  # closed with us, not by the GC
            async with contextlib.aclosing(events):
                async for event in events:
                    ended = isinstance(event, End)
                    yield event
        finally:
            if self._live.pop(request.job_id, None) is not None and not ended:
                self._cancel_in_background(engine_request_id)

    async def cancel(self, job_id: str) -> None:
        """Closes the job's stream and stops its decoding at the engine. Idempotent."""
        engine_request_id = self._live.pop(job_id, None)
        await self._runner.cancel(job_id)
        if engine_request_id is not None:
            await self._cancel_at_engine(engine_request_id)

    async def _cancel_at_engine(self, engine_request_id: str) -> None:
        body = {"request_id": engine_request_id}
        try:
            await self.json("POST", f"/v2/models/{self._model}_cancel/generate", body)
        except AdapterError as exc:  # the stream is closed already; the engine may be gone
            _log.warning(
                "engine cancel failed: %s",
                exc,
                extra={"action": "cancel-engine", "target": engine_request_id},
            )

    def _cancel_in_background(self, engine_request_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._cancel_at_engine(engine_request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        await super().close()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def health(self) -> EngineHealth:
        server = await self._client.call("GET", "/v2/health/ready")
        if server.status == 400:
            return EngineHealth("loading", "Triton is not ready (400)")
        if not server.ok:
            return EngineHealth("failed", f"/v2/health/ready answered {server.status}")
        for name in (self._model, f"{self._model}_stats"):  # PyTriton loads them in turn
            model = await self._client.call("GET", f"/v2/models/{name}/ready")
            if model.status == 400:
                return EngineHealth("loading", f"model {name!r} is not loaded yet (400)")
            if not model.ok:
                return EngineHealth("failed", f"model {name!r} ready check: {model.status}")
        stats = await self.stats()
        return EngineHealth("ready", "", 1, int(stats.get("generations_active", 0)))

    async def stats(self) -> dict[str, Any]:
        """The engine's own counters and facts (the `{model}_stats` model)."""
        reply = await self.json("POST", f"/v2/models/{self._model}_stats/generate", {})
        if not isinstance(reply, dict):
            raise EngineUnavailable("unreadable stats reply")
        return reply

    async def props(self) -> EngineProps:
        server = await self.json("GET", "/v2")
        metadata = await self.json("GET", f"/v2/models/{self._model}")
        stats = await self.stats()
        inputs = {str(tensor.get("name")) for tensor in metadata.get("inputs") or ()}
        chat = "messages" in inputs and bool(stats.get("chat_template"))
        return EngineProps(
            engine="triton",
            engine_version=f"triton {server.get('version', '')}; {stats.get('engine_version', '')}",
            ctx=int(stats.get("ctx", 0)),
            slots_total=1,
            chat_template=chat,
            features=frozenset({"completion", "chat"} if chat else {"completion"}),
            model_path=str(stats.get("model_path", "")),
        )

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        raise RequestRejected("INVALID_PARAMS", "the triton engine has no tokenize route")

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        raise RequestRejected("INVALID_PARAMS", "the triton engine has no detokenize route")

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        raise RequestRejected("INVALID_PARAMS", "the triton engine serves no embeddings")


def _triton_adapter(endpoint: Endpoint) -> TritonAdapter:
    return TritonAdapter(endpoint)


register("triton", _triton_adapter)
