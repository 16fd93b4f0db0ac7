"""`VllmBackend`: vLLM's `AsyncLLM` (v1 engine) in the worker process (WRK-03).

The same `EngineBackend` as the in-process llama.cpp engine, so `llorch worker --engine
vllm --model <Hugging Face folder>` serves vLLM behind the same gRPC worker protocol.

Where it runs: vLLM is not in the project's venv (its `+cpu` torch and pins would fight
the workspace's); the worker runs on the python of the `vllm-inproc:package` engine venv,
which holds vLLM and, installed editable from the running llorch's source projects,
`llorch-specs` and `llorch-worker-adapters` (`provisioners.plan.engine_specs`). This
module imports vLLM; only that python imports it (`--engine vllm`).

Loading: `AsyncLLM.from_engine_args` starts vLLM's engine-core process and loads the
weights (~25 s on a CPU, plus 11-17 s of imports); it blocks, so it runs on a thread
while the gRPC server answers `Health` with `loading`. Settings as for the `vllm`
server kind: the pool's ctx is `max_model_len`, its slots `max_num_seqs`, float32,
eager mode (no torch.compile), and a KV cache sized from the folder's `config.json`
(`plan.kv_cache_bytes`). vLLM's child processes are in the worker's process group: the
pool manager signals the group.

One generation: the capability matrix's refusal, the prompt rendered (chat: the
tokenizer's own chat template; with tools (API-17) as the in-process llama.cpp engine
renders them: by a template whose tool section writes calls in llorch's text form,
else described in a system message, `worker_adapters.tools`, and the answer
constrained by the grammar of the calls, made with xgrammar's JSON-schema converter,
through vLLM's structured outputs) and tokenized here with vLLM's tokenizer, so an empty
or too-long prompt is refused typed before the engine sees it; then
`AsyncLLM.generate(token ids, SamplingParams(output_kind=DELTA))` streams deltas, which
`plan.DeltaAssembler` turns into `Token` events (text held back inside a UTF-8
character comes with the token that completes it). Stop strings, seed, logprobs and the
sampling parameters are vLLM's own (`plan.sampling_args`). Cancel aborts the request in
the engine (`AsyncLLM.abort`); a consumer that goes away closes the generator, which
aborts it too.

Load: `health()` reports vLLM's own scheduler counts of running and waiting requests as
busy slots, as the `vllm` server kind's load is `num_requests_running` + `_waiting` (a
stat logger of ours receives the engine's `SchedulerStats` at every engine step).
Embeddings: served when the model supports vLLM's `embed` task; a generative model
refuses them with INVALID_PARAMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vllm
import xgrammar
from vllm import AsyncEngineArgs, SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.loggers import StatLoggerBase

from worker_adapters.engine import engine_health, engine_props, refusal_to_start
from worker_adapters.errors import RequestRejected
from worker_adapters.tools import present_tools, renders_calls_in_text_form, template_inputs
from worker_adapters.types import (
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Started,
    StreamEvent,
    Tokenized,
    TokenLogprob,
)
from worker_adapters.vllm_inproc.plan import (
    DeltaAssembler,
    check_prompt,
    kv_cache_bytes,
    sampling_args,
    token_logprobs,
)

__all__ = ["ENGINE", "VllmBackend", "VllmSettings"]

ENGINE = "vllm-inproc"
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


@dataclass(frozen=True, slots=True)
class VllmSettings:
    """A Hugging Face model folder; `ctx` tokens per sequence, `slots` sequences at once."""

    model_path: Path
    ctx: int = 2048
    slots: int = 1


class _Counts:
    """vLLM's own scheduler counts, as its engine reports them at every step."""

    running = 0
    waiting = 0


def _stat_logger(counts: _Counts) -> Any:
    class SchedulerCounts(StatLoggerBase):  # type: ignore[misc] # vLLM is untyped here
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                counts.running = int(scheduler_stats.num_running_reqs)
                counts.waiting = int(scheduler_stats.num_waiting_reqs)

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerCounts


class VllmBackend:
    """vLLM in process. Create, `await start()`, then serve."""

    def __init__(self, settings: VllmSettings, *, incarnation: int = 0) -> None:
        self._settings = settings
        self._incarnation = incarnation
        self._engine: Any = None
        self._tokenizer: Any = None
        self._state = EngineHealth("loading", "loading model", settings.slots)
        self._counts = _Counts()
        self._jobs: set[str] = set()
        self._embeds = False
        self._has_template = False
        self._template_renders_tools = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        settings = self._settings
        try:
            config = json.loads((settings.model_path / "config.json").read_text("utf-8"))
            args = AsyncEngineArgs(
                model=str(settings.model_path),
                max_model_len=settings.ctx,
                max_num_seqs=settings.slots,
                dtype="float32",
                enforce_eager=True,
                kv_cache_memory_bytes=kv_cache_bytes(config, settings.ctx, settings.slots),
            )
            self._engine = await asyncio.to_thread(
                AsyncLLM.from_engine_args, args, stat_loggers=[_stat_logger(self._counts)]
            )
            await self._engine.check_health()
            self._tokenizer = self._engine.get_tokenizer()
            self._embeds = "embed" in await self._engine.get_supported_tasks()
        except Exception as exc:
            self._state = EngineHealth("failed", f"model load failed: {exc}")
            await self.close()
            raise
        template = getattr(self._tokenizer, "chat_template", None)
        self._has_template = bool(template)
        self._template_renders_tools = isinstance(template, str) and renders_calls_in_text_form(
            template
        )
        self._state = EngineHealth("ready", "", settings.slots)

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    # -- facts -------------------------------------------------------------------------

    def health(self) -> EngineHealth:
        engine = self._engine
        if self._state.state == "ready" and engine is not None and engine.errored:
            self._state = EngineHealth("failed", f"vLLM's engine died: {engine.dead_error}")
        busy = self._counts.running + self._counts.waiting  # as the `vllm` server kind's load
        return engine_health(self._state, self._settings.slots, busy)

    def props(self) -> EngineProps:
        return engine_props(
            ENGINE,
            f"vllm {vllm.__version__}",
            self._settings,
            chat_template=self._has_template,
            embeddings=self._embeds,
            incarnation=self._incarnation,
        )

    # -- generation --------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        ready = self._state.state == "ready" and self._engine is not None
        refused = refusal_to_start(ENGINE, ready, request)
        if refused is not None:
            yield refused
            return
        received = time.perf_counter()
        try:
            prompt = self._prompt_tokens(request)
            params = _sampling_params(request)
        except ValueError as exc:  # the request, not the engine: refused, never retried
            yield Failed("INVALID_PARAMS", str(exc), False, True)
            return
        checked = check_prompt(len(prompt), request.sampling.max_tokens, self._settings.ctx)
        if checked is not None:
            yield Failed(checked[0], checked[1], False, True)
            return
        self._jobs.add(request.job_id)
        try:
            async for event in self._stream(request, prompt, params, received):
                yield event
        finally:
            self._jobs.discard(request.job_id)

    async def _stream(
        self,
        request: GenerateRequest,
        prompt: list[int],
        params: Any,
        received: float,
    ) -> AsyncIterator[StreamEvent]:
        top_n = request.sampling.logprobs
        assembler = DeltaAssembler()
        first_at, finish, started = 0.0, "length", False
        outputs = self._engine.generate(
            {"prompt_token_ids": prompt}, params, request_id=request.job_id
        )
        try:
            async for output in outputs:
                if not started:
                    started = True
                    yield Started(len(prompt), int(output.num_cached_tokens or 0))
                completion = output.outputs[0]
                ids = list(completion.token_ids)
                if ids and not first_at:
                    first_at = time.perf_counter()
                scored = _scored(ids, completion.logprobs, top_n)
                token = assembler.feed(completion.text, len(ids), scored)
                if token is not None:
                    yield token
                if completion.finish_reason is not None:
                    finish = _FINISH.get(completion.finish_reason, completion.finish_reason)
        except (VLLMClientError, ValueError) as exc:
            yield Failed("INVALID_PARAMS", f"vLLM refused the request: {exc}", False, not started)
            return
        except EngineDeadError as exc:
            self._state = EngineHealth("failed", f"vLLM's engine died: {exc}")
            yield Failed("ENGINE_ERROR", f"vLLM's engine died: {exc}", True, not started, True)
            return
        except Exception as exc:  # noqa: BLE001 - vLLM's failure of this request, typed
            yield Failed("ENGINE_ERROR", f"vLLM failed: {exc}", not started, not started)
            return
        finally:
            with contextlib.suppress(Exception):
                await outputs.aclose()  # aborts the request in the engine when unfinished
        if not started:
            yield Started(len(prompt))
        done = time.perf_counter()
        yield End(
            tokens_in=len(prompt),
            tokens_out=assembler.produced,
            finish_reason=finish,
            ttft_ms=((first_at or done) - received) * 1000.0,
            decode_time_ms=(done - first_at) * 1000.0 if first_at else 0.0,
        )

    def _prompt_tokens(self, request: GenerateRequest) -> list[int]:
        tokenizer = self._tokenizer
        if request.messages is None:
            return list(tokenizer.encode(request.prompt or "", add_special_tokens=True))
        if not self._has_template:
            raise ValueError("the model has no chat template: send a prompt instead")
        sampling = request.sampling
        tools: list[dict[str, Any]] | None = None
        messages: list[dict[str, Any]]
        if self._template_renders_tools:
            messages, tools = template_inputs(
                request.messages, sampling.tools, sampling.tool_choice
            )
        else:
            messages = list(present_tools(request.messages, sampling.tools, sampling.tool_choice))
        try:
            rendered = tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:
            raise ValueError(f"the model's chat template refused the messages: {exc}") from exc
        return list(tokenizer.encode(str(rendered), add_special_tokens=False))

    def cancel(self, job_id: str) -> bool:
        if job_id not in self._jobs or self._engine is None:
            return False
        task = asyncio.get_running_loop().create_task(self._engine.abort(job_id))
        task.add_done_callback(_consume)
        return True

    # -- tokens and embeddings ---------------------------------------------------------

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        tokenizer = self._ready_tokenizer()
        if not with_offsets:
            return Tokenized(tuple(tokenizer.encode(text, add_special_tokens=False)))
        found = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in found["offset_mapping"]]
        return Tokenized(tuple(found["input_ids"]), tuple(_byte_offsets(text, starts)))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        tokenizer = self._ready_tokenizer()
        vocab = len(tokenizer)
        for position, token in enumerate(ids):
            if not 0 <= token < vocab:
                raise RequestRejected(
                    "INVALID_PARAMS",
                    f"tokens[{position}]: {token} is not a token id of this model "
                    f"(its vocabulary has {vocab} tokens: 0..{vocab - 1})",
                )
        return str(tokenizer.decode(list(ids), skip_special_tokens=False))

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        self._ready_tokenizer()
        if not self._embeds:
            raise RequestRejected(
                "INVALID_PARAMS", "this pool's model is a generator: vLLM serves no embeddings"
            )
        from vllm import PoolingParams

        vectors = []
        for index, text in enumerate(inputs):
            request_id = f"embed-{time.time_ns()}-{index}"
            last: Any = None
            async for output in self._engine.encode(text, PoolingParams(task="embed"), request_id):
                last = output
            vectors.append(tuple(float(x) for x in last.outputs.data))
        return tuple(vectors)

    def _ready_tokenizer(self) -> Any:
        if self._tokenizer is None or self._state.state != "ready":
            raise RequestRejected("POOL_UNREADY", "engine is not ready")
        return self._tokenizer


def _sampling_params(request: GenerateRequest) -> Any:
    """vLLM's SamplingParams of the request; ValueError (INVALID_PARAMS) when vLLM
    refuses a value (its own range checks)."""
    args = sampling_args(request.sampling, _json_schema_gbnf)
    structured = args.pop("structured", None)
    if structured is not None:
        args["structured_outputs"] = StructuredOutputsParams(**structured)
    try:
        return SamplingParams(output_kind=RequestOutputKind.DELTA, **args)
    except VLLMClientError as exc:
        raise ValueError(str(exc)) from exc


def _json_schema_gbnf(schema: str) -> str:
    """xgrammar's GBNF of a JSON schema (text): compact JSON, no whitespace to spare (a
    random model would spend its tokens on it); ValueError when xgrammar cannot."""
    try:
        return str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False))
    except Exception as exc:  # noqa: BLE001 - every converter failure is a refusal
        raise ValueError(
            f"tools: a tool's parameters cannot be turned into a grammar: {exc}"
        ) from None


def _scored(ids: list[int], logprobs: Any, top_n: int | None) -> list[TokenLogprob]:
    if top_n is None or not logprobs:
        return []
    return [
        token_logprobs(token, position, top_n)
        for token, position in zip(ids, logprobs, strict=False)
    ]


def _byte_offsets(text: str, char_starts: list[int]) -> list[int]:
    """Character offsets in `text` as UTF-8 byte offsets (one pass over the text)."""
    offsets, position, bytes_so_far = [], 0, 0
    for start in char_starts:
        bytes_so_far += len(text[position:start].encode())
        position = start
        offsets.append(bytes_so_far)
    return offsets


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # an abort of a request that just finished: nothing to do
