"""`OpenAIAdapter`: any OpenAI-compatible server (`openai` kind).

Completions go to `/v1/completions`, chat to `/v1/chat/completions` (the server renders
the model's template); both stream with `stream_options.include_usage` and end with
`data: [DONE]` (`_openai_wire.OpenAIDecoder`). Health is `GET /v1/models`, since
llama_cpp.server has no `/health`; that server also refuses connections until its model
is loaded, so "unreachable" may mean "loading": the pool manager, which sees the
process, tells the two apart.

What a generic OpenAI server cannot be trusted to honour (unknown fields are often
ignored, so sending them would run unconstrained or unsampled):
- `grammar`: refused, INVALID_PARAMS (fail closed);
- `json_schema`: chat only, as `response_format: {type: json_schema}`, and the output
  must parse as JSON or the job fails (a server that ignored the format is caught);
  on completions refused;
- `top_k`, `min_p`, `repeat_penalty`: not sent (not OpenAI fields); the engine's
  defaults apply.
- `logprobs`: asked in OpenAI's fields and read back (`_logprobs`); a server that
  ignores them fails the job before its first token (ENGINE_ERROR), never silently.
Tokenize and detokenize use llama_cpp.server's `/extras/*` routes (no byte offsets).

Seen on a real llama_cpp.server (0.3.36): a prompt longer than its context gets HTTP
200 and a stream that ends with no chunk and no `[DONE]` (the error is raised inside
the generator). That reads as WORKER_RESET before the first token (retriable): the wire
says no more; admission (ADM-03) is where such prompts must be refused. The job id is
not sent as `X-Request-Id`, which that server answers with 400 unless it is a UUID.
"""

from __future__ import annotations

import json
from typing import Any

from worker_adapters._http import HttpSettings, error_from_body
from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan, unsupported
from worker_adapters._logprobs import LogprobsDecoder, openai_logprobs, request_openai_logprobs
from worker_adapters._openai_wire import OpenAIDecoder, chat_body, completion_body
from worker_adapters.http_errors import control_error
from worker_adapters.protocol import Endpoint, register
from worker_adapters.types import EngineHealth, EngineProps, Failed, GenerateRequest, Tokenized

__all__ = ["OpenAIAdapter"]


class OpenAIAdapter(HttpAdapterBase):
    kind = "openai"
    engine = "openai"

    def __init__(
        self,
        endpoint: Endpoint,
        settings: HttpSettings | None = None,
        *,
        model: str = "",
        slots: int = 1,
    ) -> None:
        super().__init__(endpoint, settings, model=model)
        self._slots = slots

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        sampling = request.sampling
        if sampling.grammar is not None:
            return unsupported(self.engine, "a grammar")
        chat = request.messages is not None
        if sampling.json_schema is not None and not chat:
            return unsupported(self.engine, "a json_schema on a completion")
        model = await self.served_model()
        body = chat_body(request, model) if chat else completion_body(request, model)
        body["stream_options"] = {"include_usage": True}
        check_json = False
        if sampling.json_schema is not None:
            schema = _schema(sampling.json_schema)
            if schema is None:
                return Failed("INVALID_PARAMS", "json_schema is not valid JSON", False, True)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
            check_json = True
        path = "/v1/chat/completions" if chat else "/v1/completions"
        decoder = OpenAIDecoder(chat=chat, check_json=check_json)
        if sampling.logprobs is None:
            return StreamPlan(path, body, decoder)
        request_openai_logprobs(body, sampling, chat=chat)
        return StreamPlan(path, body, LogprobsDecoder(decoder, openai_logprobs, sampling.logprobs))

    async def health(self) -> EngineHealth:
        reply = await self._client.call("GET", "/v1/models")
        if reply.ok:
            return EngineHealth("ready", "", self._slots, self._runner.in_flight)
        if reply.status == 503:
            return EngineHealth("loading", "engine answered 503", self._slots)
        raise control_error(error_from_body(reply.status, reply.body))

    async def props(self) -> EngineProps:
        listing = await self.json("GET", "/v1/models")
        models = listing.get("data") or [{}]
        first = models[0]
        return EngineProps(
            engine=self.engine,
            engine_version=str(first.get("owned_by", "")),
            ctx=int(first.get("max_model_len") or 0),
            slots_total=self._slots,
            chat_template=True,
            features=frozenset({"completion", "chat", "json_schema", "logprobs"}),
            model_path=str(first.get("id", "")),
        )

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        reply = await self.json("POST", "/extras/tokenize", {"input": text})
        return Tokenized(tuple(int(i) for i in reply["tokens"]))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        reply = await self.json("POST", "/extras/detokenize", {"tokens": list(ids)})
        return str(reply["text"])


def _schema(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _openai_adapter(endpoint: Endpoint) -> OpenAIAdapter:
    return OpenAIAdapter(endpoint)


register("openai", _openai_adapter)
