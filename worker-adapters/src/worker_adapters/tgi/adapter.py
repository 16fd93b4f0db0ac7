"""`TgiAdapter`: text-generation-inference (`tgi` kind, §A4).

Completions stream from `POST /generate_stream` (`tgi.wire`); chat goes to TGI's
`/v1/chat/completions`, which renders the model's template and ends with `[DONE]`
(`_openai_wire`), with a JSON schema as TGI's `response_format {type: json, value}`.
What the capability matrix's `tgi` row does not list is refused (UNSUPPORTED_PARAM): a
GBNF grammar (TGI takes JSON schema and regex), `min_p`, `presence_penalty`, and on
chat also `top_k` and `repeat_penalty` (TGI's chat route has neither).
Logprobs: each `/generate_stream` token carries its own, `top_n_tokens` adds the
alternatives (`top_tokens`); chat takes OpenAI's fields (`_logprobs`).
Health is `GET /health` (200 ready, 503 unhealthy: `failed`; connections are refused
while the shards warm up). Props come from `/info`; `/tokenize` returns byte offsets.
TGI has no detokenize and no embeddings route: both are refused.
"""

from __future__ import annotations

import json

from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan
from worker_adapters._logprobs import (
    LogprobsDecoder,
    openai_logprobs,
    request_openai_logprobs,
    tgi_logprobs,
)
from worker_adapters._openai_wire import OpenAIDecoder, chat_body
from worker_adapters.errors import EngineUnavailable, RequestRejected
from worker_adapters.protocol import Endpoint, register
from worker_adapters.tgi.wire import TgiDecoder, generate_parameters
from worker_adapters.types import EngineHealth, EngineProps, Failed, GenerateRequest, Tokenized

__all__ = ["TgiAdapter"]


class TgiAdapter(HttpAdapterBase):
    kind = "tgi"
    engine_kind = "tgi"

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        if (refused := self.refused(request)) is not None:
            return refused
        sampling = request.sampling
        schema = None
        if sampling.json_schema is not None:
            try:
                schema = json.loads(sampling.json_schema)
            except ValueError:
                return Failed("INVALID_PARAMS", "json_schema is not valid JSON", False, True)
        top_n = sampling.logprobs
        if request.messages is None:
            parameters = generate_parameters(sampling, schema)
            body = {"inputs": request.prompt or "", "parameters": parameters}
            if top_n is None:
                return StreamPlan("/generate_stream", body, TgiDecoder())
            if top_n > 0:  # each token's own logprob comes with `details` regardless
                parameters["top_n_tokens"] = top_n
            return StreamPlan(
                "/generate_stream", body, LogprobsDecoder(TgiDecoder(), tgi_logprobs, top_n)
            )
        chat = chat_body(request, await self.served_model())
        chat["stream_options"] = {"include_usage": True}
        if schema is not None:
            chat["response_format"] = {"type": "json", "value": schema}
        if top_n is None:
            return StreamPlan("/v1/chat/completions", chat, OpenAIDecoder(chat=True))
        request_openai_logprobs(chat, sampling, chat=True)
        decoder = LogprobsDecoder(OpenAIDecoder(chat=True), openai_logprobs, top_n)
        return StreamPlan("/v1/chat/completions", chat, decoder)

    async def health(self) -> EngineHealth:
        reply = await self._client.call("GET", "/health")
        if reply.ok:
            return EngineHealth("ready", "", 0, self._runner.in_flight)
        if reply.status == 503:
            return EngineHealth("failed", "TGI reports unhealthy (503)")
        raise EngineUnavailable(f"TGI /health answered {reply.status}")

    async def props(self) -> EngineProps:
        info = await self.json("GET", "/info")
        ctx = info.get("max_total_tokens") or info.get("max_input_length") or 0
        return EngineProps(
            engine="tgi",
            engine_version=str(info.get("version", "")),
            ctx=int(ctx),
            slots_total=int(info.get("max_concurrent_requests") or 0),
            chat_template=True,
            features=frozenset({"completion", "chat", "json_schema", "tokenize", "logprobs"}),
            model_path=str(info.get("model_id", "")),
        )

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        tokens = await self.json("POST", "/tokenize", {"inputs": text})
        ids = tuple(int(t["id"]) for t in tokens)
        offsets = tuple(int(t["start"]) for t in tokens) if with_offsets else ()
        return Tokenized(ids, offsets)

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        raise RequestRejected("INVALID_PARAMS", "TGI has no detokenize route")

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        raise RequestRejected("INVALID_PARAMS", "TGI serves no embeddings")


def _tgi_adapter(endpoint: Endpoint) -> TgiAdapter:
    return TgiAdapter(endpoint)


register("tgi", _tgi_adapter)
