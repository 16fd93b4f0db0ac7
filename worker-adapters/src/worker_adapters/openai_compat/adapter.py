"""`OpenAIAdapter`: any OpenAI-compatible server (`openai` kind).

Completions go to `/v1/completions`, chat to `/v1/chat/completions` (the server renders
the model's template); both stream with `stream_options.include_usage` and end with
`data: [DONE]` (`_openai_wire.OpenAIDecoder`). Health is `GET /v1/models`, since
llama_cpp.server has no `/health`; that server also refuses connections until its model
is loaded, so "unreachable" may mean "loading": the pool manager, which sees the
process, tells the two apart.

What a generic OpenAI server cannot be trusted to honour (unknown fields are often
ignored, so sending them would run unconstrained or unsampled) is refused with
UNSUPPORTED_PARAM, as the capability matrix's `openai-compatible` row says:
- `grammar`, `top_k`, `min_p`, `repeat_penalty` (not OpenAI fields): refused;
- `json_schema`: chat only, as `response_format: {type: json_schema}`, and the output
  must parse as JSON or the job fails (a server that ignored the format is caught);
  on completions refused;
- `logprobs`: asked in OpenAI's fields and read back (`_logprobs`); a server that
  ignores them fails the job before its first token (ENGINE_ERROR), never silently.
`LlamaCppServerAdapter` (`llamacpp-server-py`) is this adapter for llama_cpp.server,
which honours llama.cpp's own fields too: `top_k`, `min_p`, `repeat_penalty` and
`grammar` (a JSON schema goes as the grammar llama.cpp's converter makes of it).
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
from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan
from worker_adapters._logprobs import LogprobsDecoder, openai_logprobs, request_openai_logprobs
from worker_adapters._openai_wire import OpenAIDecoder, chat_body, completion_body
from worker_adapters.constraints import json_schema_grammar
from worker_adapters.http_errors import control_error
from worker_adapters.protocol import Endpoint, register
from worker_adapters.types import EngineHealth, EngineProps, Failed, GenerateRequest, Tokenized

__all__ = ["LlamaCppServerAdapter", "OpenAIAdapter"]


class OpenAIAdapter(HttpAdapterBase):
    kind = "openai"
    engine = "openai"
    engine_kind = "openai-compatible"

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
        if (refused := self.refused(request)) is not None:
            return refused
        sampling = request.sampling
        chat = request.messages is not None
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


class LlamaCppServerAdapter(OpenAIAdapter):
    """llama_cpp.server (`llamacpp-server-py`): OpenAI's routes with llama.cpp's fields."""

    kind = "llamacpp-server-py"
    engine = "llamacpp-server-py"
    engine_kind = "llamacpp-server-py"

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        if (refused := self.refused(request)) is not None:
            return refused
        sampling = request.sampling
        chat = request.messages is not None
        model = await self.served_model()
        body = chat_body(request, model) if chat else completion_body(request, model)
        body["stream_options"] = {"include_usage": True}
        extras = (
            ("top_k", sampling.top_k),
            ("min_p", sampling.min_p),
            ("repeat_penalty", sampling.repeat_penalty),
            ("grammar", sampling.grammar),
        )
        body.update((name, value) for name, value in extras if value is not None)
        if sampling.json_schema is not None:
            try:
                body["grammar"] = json_schema_grammar(sampling.json_schema)
            except ValueError as exc:
                return Failed("INVALID_PARAMS", str(exc), False, True)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        decoder = OpenAIDecoder(chat=chat)
        if sampling.logprobs is None:
            return StreamPlan(path, body, decoder)
        request_openai_logprobs(body, sampling, chat=chat)
        return StreamPlan(path, body, LogprobsDecoder(decoder, openai_logprobs, sampling.logprobs))


def _openai_adapter(endpoint: Endpoint) -> OpenAIAdapter:
    return OpenAIAdapter(endpoint)


def _llamacpp_server_adapter(endpoint: Endpoint) -> LlamaCppServerAdapter:
    return LlamaCppServerAdapter(endpoint)


register("openai", _openai_adapter)
register("llamacpp-server-py", _llamacpp_server_adapter)
