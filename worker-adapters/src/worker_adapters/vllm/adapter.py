"""`VllmAdapter`: `vllm serve` (`vllm` kind), the OpenAI server plus vLLM's facts (§A3).

- Streams: `/v1/completions` and `/v1/chat/completions` with `stream_options`
  `{include_usage, continuous_usage_stats}`, so every chunk carries usage and `Started`
  knows the prompt's token count. vLLM sends `data: [DONE]` also after an error frame:
  the error frame is the verdict (`_openai_wire.OpenAIDecoder`). `finish_reason: abort`
  is a failure, not an end.
- Sampling extras sent: `top_k`, `min_p`, `repetition_penalty` (our `repeat_penalty`).
- Constraints by server version (`GET /version`, cached): from 0.12 `structured_outputs`
  `{grammar}` / `{json}`; before it `guided_grammar` / `guided_json`. The legacy fields
  are silently ignored by 0.12+ (and the new one by older servers), so an unknown version
  fails closed with INVALID_PARAMS. Grammars pass as written (vLLM's xgrammar backend
  reads GBNF).
- Tools (API-17) as on llama-server (`_tool_chat`): the tools described in a system
  message, the answer constrained by the GBNF of the calls (llama.cpp's converter over
  the tools' schemas, which xgrammar takes as it is) sent as the grammar above, so the
  calls come back as text in llorch's tool-call form. Not vLLM's own tool calling: it
  needs `--enable-auto-tool-choice` and a `--tool-call-parser` matching the model's own
  call format, which a model without one (the fixture's, Gemma's) does not have.
- Health: `GET /health`, 200 ready, 503 engine dead (`failed`); connections are refused
  while the model loads (raised as `EngineUnavailable`). A ready answer's busy slots are
  vLLM's own `vllm:num_requests_running` + `vllm:num_requests_waiting` (`/metrics`,
  summed over its engines), so the pool's load counts requests from any client; the
  adapter's own in-flight count when `/metrics` does not answer.
- Logprobs: OpenAI's fields (`logprobs`, `top_logprobs`); completions answer in the
  legacy shape (`tokens`, `token_logprobs`, `top_logprobs` maps), read by `_logprobs`.
- `/tokenize` (`{prompt}` -> `{tokens}`; no byte offsets) and `/detokenize`.
- The job id goes as `X-Request-Id`, which vLLM adopts as its request id.
- vLLM does not report its sequence limit over HTTP: `slots` is configuration.
"""

from __future__ import annotations

import json
import re
from typing import Any

from worker_adapters._http import HttpSettings
from worker_adapters._http_adapter import StreamPlan
from worker_adapters._logprobs import LogprobsDecoder, openai_logprobs, request_openai_logprobs
from worker_adapters._openai_wire import OpenAIDecoder, chat_body, completion_body
from worker_adapters._tool_chat import tool_chat
from worker_adapters.errors import EngineUnavailable
from worker_adapters.openai_compat.adapter import OpenAIAdapter
from worker_adapters.protocol import Endpoint, register
from worker_adapters.types import EngineHealth, EngineProps, Failed, GenerateRequest, Tokenized

__all__ = ["VllmAdapter", "constraint_fields", "vllm_gauges"]

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
_STRUCTURED_OUTPUTS_SINCE = (0, 12)


def vllm_gauges(text: str) -> dict[str, float]:
    """`vllm:` samples of a Prometheus text page by name without the prefix, summed over
    their label sets (one per engine and model)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        key = name.removeprefix("vllm:").split("{")[0].strip()
        values[key] = values.get(key, 0.0) + number
    return values


def constraint_fields(version: str, grammar: str | None, schema: Any) -> dict[str, Any] | None:
    """Request fields for a constraint on this vLLM version; None when unknown (refuse)."""
    match = _VERSION.match(version)
    if match is None:
        return None
    if (int(match.group(1)), int(match.group(2))) >= _STRUCTURED_OUTPUTS_SINCE:
        return {"structured_outputs": {"grammar": grammar} if grammar else {"json": schema}}
    return {"guided_grammar": grammar} if grammar else {"guided_json": schema}


class VllmAdapter(OpenAIAdapter):
    kind = "vllm"
    engine = "vllm"
    engine_kind = "vllm"

    def __init__(
        self,
        endpoint: Endpoint,
        settings: HttpSettings | None = None,
        *,
        model: str = "",
        slots: int = 256,
        version: str = "",
    ) -> None:
        super().__init__(endpoint, settings, model=model, slots=slots)
        self._version = version  # the server's, when known; else read from /version

    async def plan(self, request: GenerateRequest) -> StreamPlan | Failed:
        if (refused := self.refused(request)) is not None:
            return refused
        sampling = request.sampling
        chat = request.messages is not None
        model = await self.served_model()
        body = chat_body(request, model) if chat else completion_body(request, model)
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        extras = (
            ("top_k", sampling.top_k),
            ("min_p", sampling.min_p),
            ("repetition_penalty", sampling.repeat_penalty),
        )
        body.update((name, value) for name, value in extras if value is not None)
        grammar = sampling.grammar
        if chat and (tools := tool_chat(request)) is not None:
            if isinstance(tools, Failed):
                return tools
            body["messages"] = tools.messages
            grammar = tools.grammar or grammar
        if grammar is not None or sampling.json_schema is not None:
            refused = await self._add_constraint(body, grammar, sampling.json_schema)
            if refused is not None:
                return refused
        path = "/v1/chat/completions" if chat else "/v1/completions"
        # vLLM takes X-Request-Id as its own request id: its logs then name our job.
        headers = {"X-Request-Id": request.job_id}
        if sampling.logprobs is None:
            return StreamPlan(path, body, OpenAIDecoder(chat=chat), headers)
        request_openai_logprobs(body, sampling, chat=chat)
        decoder = LogprobsDecoder(OpenAIDecoder(chat=chat), openai_logprobs, sampling.logprobs)
        return StreamPlan(path, body, decoder, headers)

    async def _add_constraint(
        self, body: dict[str, Any], grammar: str | None, json_schema: str | None
    ) -> Failed | None:
        schema = None
        if grammar is None:
            try:
                schema = json.loads(json_schema or "")
            except ValueError:
                return Failed("INVALID_PARAMS", "json_schema is not valid JSON", False, True)
        fields = constraint_fields(await self.version(), grammar, schema)
        if fields is None:
            message = f"vLLM version {self._version!r} unknown: cannot send a constraint safely"
            return Failed("INVALID_PARAMS", message, False, True)
        body.update(fields)
        return None

    async def version(self) -> str:
        if not self._version:
            reply = await self.json("GET", "/version")
            self._version = str(reply.get("version", "")) if isinstance(reply, dict) else ""
        return self._version

    async def health(self) -> EngineHealth:
        reply = await self._client.call("GET", "/health")
        if reply.ok:
            return EngineHealth("ready", "", self._slots, await self._busy())
        if reply.status == 503:
            return EngineHealth("failed", "vLLM engine is dead (503)", self._slots)
        raise EngineUnavailable(f"vLLM /health answered {reply.status}")

    async def _busy(self) -> int:
        reply = await self._client.call("GET", "/metrics")
        if not reply.ok or not isinstance(reply.body, str):
            return self._runner.in_flight
        gauges = vllm_gauges(reply.body)
        if "num_requests_running" not in gauges:
            return self._runner.in_flight
        return round(gauges["num_requests_running"] + gauges.get("num_requests_waiting", 0.0))

    async def props(self) -> EngineProps:
        listing = await self.json("GET", "/v1/models")
        first = (listing.get("data") or [{}])[0]
        return EngineProps(
            engine="vllm",
            engine_version=await self.version(),
            ctx=int(first.get("max_model_len") or 0),
            slots_total=self._slots,
            chat_template=True,
            features=frozenset(
                {"completion", "chat", "grammar", "json_schema", "tokenize", "logprobs"}
            ),
            model_path=str(first.get("root") or first.get("id", "")),
        )

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        body = {"model": await self.served_model(), "prompt": text, "add_special_tokens": False}
        reply = await self.json("POST", "/tokenize", body)
        return Tokenized(tuple(int(i) for i in reply["tokens"]))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        body = {"model": await self.served_model(), "tokens": list(ids)}
        return str((await self.json("POST", "/detokenize", body))["prompt"])


def _vllm_adapter(endpoint: Endpoint) -> VllmAdapter:
    return VllmAdapter(endpoint)


register("vllm", _vllm_adapter)
