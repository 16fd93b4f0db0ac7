"""`LlamaServerAdapter`: llama.cpp's `llama-server` (`llamacpp` kind, §A1).

Completions stream from the native `POST /completion` (`llamacpp.wire`: terminal is the
chunk with `stop: true`, no `[DONE]`). Chat needs the model's template, which only the
server can render, so chat goes to its OpenAI route `/v1/chat/completions` (ends with
`[DONE]`; `_openai_wire`) with llama.cpp's extras (`top_k`, `min_p`, `repeat_penalty`,
`grammar`, `json_schema`), which that route honours too. Tools (API-17) go as they
go to the in-process engine: described in a system message, the answer constrained by
a GBNF `grammar` made of the tools' schemas (`worker_adapters.tools`), so calls come
back as text in llorch's tool-call form whatever the model's template. Not
llama-server's own `tools`: its template analysis drops tools without a word for
templates with no tool section (Gemma 3's, the fixture's), and the build llorch tests
with did not enforce `tool_choice: required` even with a Qwen-style template that has
one. Both routes honour every parameter of the capability matrix's `llamacpp` row (all
but `logit_bias`, which is refused). Logprobs are asked as `n_probs` (native) or
`logprobs`/`top_logprobs` (chat) and read by `_logprobs.LogprobsDecoder`.

Control routes: `/health` (200 ready, 503 while loading), `/slots` (busy slots, when the
server has it enabled), `/props`, `/tokenize` (with pieces for byte offsets),
`/detokenize`, `/embedding` (needs `--embeddings`), `/metrics` (needs `--metrics`;
`metrics()` returns the `llamacpp:` gauges, e.g. `requests_processing`, which the
conformance suite reads to see a cancel reach the engine). The per-pool API key goes
as `Authorization: Bearer`.
"""

from __future__ import annotations

import json
from typing import Any

from worker_adapters._http_adapter import HttpAdapterBase, StreamPlan
from worker_adapters._logprobs import LogprobsDecoder, llama_native_logprobs, openai_logprobs
from worker_adapters._openai_wire import OpenAIDecoder, chat_body
from worker_adapters._tool_chat import tool_chat
from worker_adapters.errors import EngineUnavailable, RequestRejected
from worker_adapters.llamacpp.wire import LlamaNativeDecoder, native_sampling, pieces_to_offsets
from worker_adapters.protocol import Endpoint, register
from worker_adapters.types import EngineHealth, EngineProps, Failed, GenerateRequest, Tokenized

__all__ = ["LlamaServerAdapter", "parse_metrics"]

_METRIC_PREFIX = "llamacpp:"


def parse_metrics(text: str) -> dict[str, float]:
    """`llamacpp:` samples of a Prometheus text page, by name without the prefix."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_METRIC_PREFIX):
            continue
        name, _, value = line.partition(" ")
        try:
            values[name.removeprefix(_METRIC_PREFIX).split("{")[0]] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return values


class LlamaServerAdapter(HttpAdapterBase):
    kind = "llamacpp"
    engine_kind = "llamacpp"

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
        native = native_sampling(sampling, schema)
        top_n = sampling.logprobs
        if request.messages is None:
            body = {"prompt": request.prompt or "", "stream": True, "cache_prompt": True, **native}
            if top_n is None:
                return StreamPlan("/completion", body, LlamaNativeDecoder())
            body["n_probs"] = max(top_n, 1)  # 0 would return no probabilities at all
            decoder = LogprobsDecoder(LlamaNativeDecoder(), llama_native_logprobs, top_n)
            return StreamPlan("/completion", body, decoder)
        chat = chat_body(request, await self.served_model())
        native.pop("n_predict")
        chat.update(native)
        if (tools := _with_tools(request, chat)) is not None:
            return tools
        chat["stream_options"] = {"include_usage": True}
        if top_n is None:
            return StreamPlan("/v1/chat/completions", chat, OpenAIDecoder(chat=True))
        chat.update(logprobs=True, top_logprobs=max(top_n, 1))
        decoder = LogprobsDecoder(OpenAIDecoder(chat=True), openai_logprobs, top_n)
        return StreamPlan("/v1/chat/completions", chat, decoder)

    async def health(self) -> EngineHealth:
        reply = await self._client.call("GET", "/health")
        if reply.status == 503:
            return EngineHealth("loading", "llama-server is loading its model")
        if not reply.ok:
            raise EngineUnavailable(f"llama-server /health answered {reply.status}")
        slots = await self.slots()
        busy = sum(1 for slot in slots if slot.get("is_processing"))
        return EngineHealth("ready", "", len(slots), busy)

    async def slots(self) -> list[dict[str, Any]]:
        """`/slots`, or [] when the server runs with `--no-slots`."""
        reply = await self._client.call("GET", "/slots")
        return list(reply.body) if reply.ok and isinstance(reply.body, list) else []

    async def metrics(self) -> dict[str, float]:
        reply = await self._client.call("GET", "/metrics")
        return parse_metrics(reply.body) if reply.ok and isinstance(reply.body, str) else {}

    async def props(self) -> EngineProps:
        props = await self.json("GET", "/props")
        settings = props.get("default_generation_settings") or {}
        features = {"completion", "chat", "grammar", "json_schema", "tokenize", "logprobs"}
        return EngineProps(
            engine="llamacpp",
            engine_version=str(props.get("build_info", "")),
            ctx=int(settings.get("n_ctx") or props.get("n_ctx") or 0),
            slots_total=int(props.get("total_slots") or 0),
            chat_template=bool(props.get("chat_template")),
            features=frozenset(features),
            model_path=str(props.get("model_path", "")),
        )

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        body = {"content": text, "add_special": False, "with_pieces": with_offsets}
        tokens = (await self.json("POST", "/tokenize", body))["tokens"]
        if not with_offsets:
            return Tokenized(tuple(int(t) for t in tokens))
        return Tokenized(tuple(int(t["id"]) for t in tokens), pieces_to_offsets(tokens))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        return str((await self.json("POST", "/detokenize", {"tokens": list(ids)}))["content"])

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        rows = await self.json("POST", "/embedding", {"content": list(inputs)})
        vectors: list[tuple[float, ...]] = []
        for row in sorted(rows, key=lambda r: int(r.get("index", 0))):
            embedding = row["embedding"]
            if embedding and isinstance(embedding[0], list):
                if len(embedding) != 1:
                    raise RequestRejected(
                        "INVALID_PARAMS", "llama-server runs without pooling: no sentence vector"
                    )
                embedding = embedding[0]
            vectors.append(tuple(float(x) for x in embedding))
        return tuple(vectors)


def _with_tools(request: GenerateRequest, chat: dict[str, Any]) -> Failed | None:
    """Puts a chat's tools into `chat` (its messages with the tools described, and the
    grammar of the calls); a `Failed` when they cannot be constrained here."""
    tools = tool_chat(request)
    if tools is None or isinstance(tools, Failed):
        return tools
    chat["messages"] = tools.messages
    if tools.grammar is not None:
        chat["grammar"] = tools.grammar
    return None


def _llamacpp_adapter(endpoint: Endpoint) -> LlamaServerAdapter:
    return LlamaServerAdapter(endpoint)


register("llamacpp", _llamacpp_adapter)
