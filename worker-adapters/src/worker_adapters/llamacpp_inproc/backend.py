"""`LlamaBackend`: llama.cpp in-process, one `Llama` instance per slot (WRK-02).

llama-cpp-python wraps one llama.cpp context per `Llama` object and is not safe for
concurrent use, so each slot owns one instance and one thread, and every native call on
that instance runs on that thread: the event loop never blocks on llama.cpp. The
instances memory-map the same file, so weights are shared by the page cache; each slot
has its own KV cache (and so its own prompt cache: a job that shares a prefix with the
slot's previous job reuses it).

One generation: render the chat template (the model's own, from its GGUF metadata, or
its family's published one when the file has none: `chat_templates`) or
take the raw prompt, tokenize, refuse prompts that do not fit the context with
`CONTEXT_OVERFLOW`, then sample token by token. A chat with tools (API-17) is rendered
with the tools (by the template's own tool section when it writes calls in llorch's
form, else described in a system message) and constrained by a grammar made of the
tools' schemas (`worker_adapters.tools`). Each token's
bytes go through a `TextAssembler` (UTF-8 reassembly, stop strings); when the request
asks for logprobs, each token's are computed from the logits it was sampled from
(`logprobs`) and travel with its text. Cancel sets an event checked between tokens.
Text deltas cross to the event loop through `call_soon_threadsafe`, and tokens already
waiting when the consumer looks are merged (`coalesce_tokens`).

While loading, `health()` reports the fraction of the weights loaded (`load_progress`)
from llama.cpp's own load-progress callback (`_reporting_load_progress`), over all the
loads (one per slot, then the embedder), so the pool manager, the orchestrator and
`llorch up` can show it with an ETA.

llama.cpp's own load log (devices, buffers, layers offloaded) is off; the environment
variable `LLORCH_LLAMA_VERBOSE=1` turns it on, to the worker's stderr (the pool's log),
e.g. to see where a GPU pool's layers went.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jinja2
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from worker_adapters.chat_templates import builtin_template
from worker_adapters.constraints import json_schema_grammar
from worker_adapters.engine import (
    coalesce_tokens,
    engine_health,
    engine_props,
    refusal_to_start,
)
from worker_adapters.errors import RequestRejected
from worker_adapters.llamacpp_inproc.logprobs import sampled_logprobs
from worker_adapters.textstream import TextAssembler
from worker_adapters.tools import (
    present_tools,
    renders_calls_in_text_form,
    template_inputs,
    tool_grammar,
)
from worker_adapters.types import (
    End,
    EngineHealth,
    EngineProps,
    Failed,
    GenerateRequest,
    Sampling,
    Started,
    StreamEvent,
    Token,
    Tokenized,
    TokenLogprob,
)

__all__ = [
    "GenerationPlan",
    "LlamaBackend",
    "LlamaSettings",
    "chat_formatter",
    "check_token_ids",
    "generation_plan",
    "render_chat",
]

ENGINE = "llamacpp-inproc"
# Used when a model carries no chat template of its own; props report chat_template=False.
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_DEFAULTS = {"temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}


@dataclass(frozen=True, slots=True)
class LlamaSettings:
    """How to load the model. `ctx` is per slot, in tokens; `threads` None = library default."""

    model_path: Path
    ctx: int = 2048
    slots: int = 1
    threads: int | None = None
    gpu_layers: int = 0
    embeddings: bool = False


@dataclass(slots=True)
class _Slot:
    index: int
    llama: Llama
    executor: ThreadPoolExecutor
    last_used: int = 0


@dataclass(slots=True)
class _Job:
    cancel: threading.Event
    received: float


def _llama_verbose() -> bool:
    """Whether llama.cpp logs its loads to stderr (module docstring); read at each load."""
    return os.environ.get("LLORCH_LLAMA_VERBOSE") == "1"


class LlamaBackend:
    """The in-process llama.cpp engine. Create, `await start()`, then serve."""

    def __init__(self, settings: LlamaSettings, *, incarnation: int = 0) -> None:
        self._settings = settings
        self._incarnation = incarnation
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._uses = 0
        self._slot_freed = asyncio.Event()
        self._jobs: dict[str, _Job] = {}
        self._state: EngineHealth = EngineHealth("loading", "loading model", settings.slots)
        self._template: Jinja2ChatFormatter | None = None
        self._has_template = False
        self._template_renders_tools = False  # `renders_calls_in_text_form`
        self._embedder: Llama | None = None
        self._embed_executor = ThreadPoolExecutor(1, thread_name_prefix="llama-embed")
        self._loads_done = 0  # of `_loads_total`: one per slot, one for the embedder
        self._loads_total = settings.slots + (1 if settings.embeddings else 0)
        self._load_progress = 0.0  # over all the loads, 0..1

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            for index in range(self._settings.slots):
                executor = ThreadPoolExecutor(1, thread_name_prefix=f"llama-slot{index}")
                llama = await asyncio.get_running_loop().run_in_executor(
                    executor, self._load, False
                )
                slot = _Slot(index, llama, executor)
                self._slots.append(slot)
                self._free.append(slot)
            if self._settings.embeddings:
                self._embedder = await asyncio.get_running_loop().run_in_executor(
                    self._embed_executor, self._load, True
                )
        except (ValueError, RuntimeError, OSError) as exc:
            self._state = EngineHealth("failed", f"model load failed: {exc}")
            raise
        self._template = self._chat_formatter(self._slots[0].llama)
        self._state = EngineHealth("ready", "", self._settings.slots)

    def _loaded_fraction(self, fraction: float) -> None:
        """llama.cpp's progress of the current load (0..1), on the loading thread."""
        total = max(1, self._loads_total)
        self._load_progress = min(1.0, (self._loads_done + max(0.0, fraction)) / total)

    def _load(self, embedding: bool) -> Llama:
        with _reporting_load_progress(self._loaded_fraction):
            llama = self._new_llama(embedding)
        self._loads_done += 1
        return llama

    def _new_llama(self, embedding: bool) -> Llama:
        settings = self._settings
        extra: dict[str, Any] = {}
        if settings.threads:
            extra["n_threads"] = settings.threads
        if embedding:
            extra["embedding"] = True
            extra["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        return Llama(
            str(settings.model_path),
            n_ctx=settings.ctx,
            n_gpu_layers=settings.gpu_layers,
            verbose=_llama_verbose(),
            **extra,
        )

    def _chat_formatter(self, llama: Llama) -> Jinja2ChatFormatter:
        template = _model_template(llama)
        self._has_template = template is not None
        self._template_renders_tools = renders_calls_in_text_form(template or "")
        return chat_formatter(llama)

    async def close(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()
        for slot in self._slots:
            slot.executor.shutdown(wait=True)
            slot.llama.close()
        self._embed_executor.shutdown(wait=True)
        if self._embedder is not None:
            self._embedder.close()
        self._slots.clear()

    # -- facts -------------------------------------------------------------------------

    def health(self) -> EngineHealth:
        busy = len(self._slots) - len(self._free)
        return engine_health(self._state, len(self._slots), busy, self._load_progress)

    def props(self) -> EngineProps:
        return engine_props(
            ENGINE,
            f"llama-cpp-python {llama_cpp.__version__}",
            self._settings,
            chat_template=self._has_template,
            embeddings=self._settings.embeddings,
            incarnation=self._incarnation,
        )

    # -- generation --------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamEvent]:
        refused = refusal_to_start(ENGINE, self._state.state == "ready", request)
        if refused is not None:
            yield refused
            return
        job = _Job(threading.Event(), time.perf_counter())
        try:  # reads only the vocabulary: safe beside generations on the slots
            prompt, grammar = await asyncio.to_thread(self._checked_input, request)
        except ValueError as exc:  # the request, not the engine: refused, never retried
            yield Failed("INVALID_PARAMS", str(exc), False, True)
            return
        slot = await self._acquire(prompt)
        self._jobs[request.job_id] = job
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

        def emit(event: StreamEvent | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        future = loop.run_in_executor(
            slot.executor, self._run, slot, request, (prompt, grammar), job, emit
        )
        # The slot goes back only when its thread is done with the Llama instance.
        future.add_done_callback(lambda _: self._release(slot))
        try:
            async for event in coalesce_tokens(queue):
                yield event
        finally:
            job.cancel.set()
            self._jobs.pop(request.job_id, None)

    async def _acquire(self, prompt: list[int]) -> _Slot:
        """A free slot: the one whose cache shares the longest prompt prefix when that is
        at least half the prompt (a session's next turn lands where its conversation is
        cached), else the least recently used one, so unrelated work does not evict a
        warm cache."""
        while not self._free:  # single-threaded: nothing frees a slot between check and wait
            self._slot_freed.clear()
            await self._slot_freed.wait()
        best = max(self._free, key=lambda s: (_common_prefix(s.llama, prompt), -s.index))
        if 2 * _common_prefix(best.llama, prompt) < len(prompt):
            best = min(self._free, key=lambda s: (s.last_used, s.index))
        self._free.remove(best)
        self._uses += 1
        best.last_used = self._uses
        return best

    def _release(self, slot: _Slot) -> None:
        """Called on the event loop when the slot's thread finished with it."""
        self._free.append(slot)
        self._slot_freed.set()

    def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    def _run(
        self,
        slot: _Slot,
        request: GenerateRequest,
        checked: tuple[list[int], LlamaGrammar | None],
        job: _Job,
        emit: Callable[[StreamEvent | None], None],
    ) -> None:
        """Runs on the slot's thread: the only place its Llama instance is used. A
        failure here is ours or llama.cpp's, and the same request would fail the same
        way again: ENGINE_ERROR, not retriable (a retry would only repeat it elsewhere)."""
        try:
            emit(self._generate(slot.llama, request, checked, job, emit))
        except Exception as exc:  # noqa: BLE001 - any native failure ends this job, typed
            emit(Failed("ENGINE_ERROR", f"llama.cpp failed: {exc}", False, False))
        finally:
            emit(None)

    def _generate(
        self,
        llama: Llama,
        request: GenerateRequest,
        checked: tuple[list[int], LlamaGrammar | None],
        job: _Job,
        emit: Callable[[StreamEvent | None], None],
    ) -> StreamEvent:
        sampling = request.sampling
        prompt, grammar = checked
        if len(prompt) + sampling.max_tokens > self._settings.ctx:
            return Failed(
                "CONTEXT_OVERFLOW",
                f"prompt ({len(prompt)} tokens) + max_tokens ({sampling.max_tokens}) "
                f"exceeds the context of {self._settings.ctx} tokens",
                False,
                True,
            )
        emit(Started(len(prompt), _common_prefix(llama, prompt)))
        plan = generation_plan(sampling)
        llama.set_seed(plan.seed if plan.seed is not None else _random_seed())
        assembler = TextAssembler(plan.stop)
        produced, pending, first_at = 0, 0, 0.0
        finish = "length"
        top_n = plan.logprobs  # None: no logprobs, and none of their cost
        scored: list[TokenLogprob] = []  # logprobs of the `pending` tokens
        generator = llama.generate(prompt, grammar=grammar, **plan.sampler)
        try:
            for token in generator:
                if job.cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                    finish = "stop"
                    break
                produced += 1
                pending += 1
                if produced == 1:
                    first_at = time.perf_counter()
                if top_n is not None:
                    scored.append(sampled_logprobs(llama, token, top_n))
                text = assembler.feed(llama._model.detokenize([token]))
                if text:
                    emit(Token(text, pending, tuple(scored)) if scored else Token(text, pending))
                    pending = 0
                    scored.clear()
                if assembler.stopped:
                    finish = "stop"
                    break
                if produced >= plan.max_tokens:
                    break
        finally:
            generator.close()
        tail = assembler.finish()
        if tail and finish != "cancelled":
            emit(Token(tail, pending, tuple(scored)))
        done = time.perf_counter()
        return End(
            tokens_in=len(prompt),
            tokens_out=produced,
            finish_reason=finish,
            ttft_ms=((first_at or done) - job.received) * 1000.0,
            decode_time_ms=(done - first_at) * 1000.0 if first_at else 0.0,
        )

    def _checked_input(self, request: GenerateRequest) -> tuple[list[int], LlamaGrammar | None]:
        """The prompt's tokens and the compiled constraint, or ValueError naming what is
        wrong with the request. Runs before a slot is taken, so bad input never holds one."""
        llama = self._slots[0].llama
        prompt = self._prompt_tokens(llama, request)
        if not prompt:
            raise ValueError("the prompt is empty (no tokens to start from)")
        return prompt, _grammar(request.sampling, llama)

    def _prompt_tokens(self, llama: Llama, request: GenerateRequest) -> list[int]:
        if request.messages is not None:
            assert self._template is not None
            sampling = request.sampling
            if self._template_renders_tools:
                messages, tools = template_inputs(
                    request.messages, sampling.tools, sampling.tool_choice
                )
                rendered = render_chat(self._template, messages, tools)
            else:
                described = present_tools(request.messages, sampling.tools, sampling.tool_choice)
                rendered = render_chat(self._template, list(described))
            return llama.tokenize(rendered.encode(), add_bos=False, special=True)
        return llama.tokenize((request.prompt or "").encode(), add_bos=True, special=True)

    # -- tokens and embeddings ---------------------------------------------------------

    async def tokenize(self, text: str, *, with_offsets: bool = False) -> Tokenized:
        llama = self._any_llama()
        ids = await asyncio.to_thread(llama.tokenize, text.encode(), False, True)
        if not with_offsets:
            return Tokenized(tuple(ids))
        offsets, position = [], 0
        for token in ids:
            offsets.append(position)
            position += len(llama._model.detokenize([token]))
        return Tokenized(tuple(ids), tuple(offsets))

    async def detokenize(self, ids: tuple[int, ...]) -> str:
        """The text of `ids`; RequestRejected(INVALID_PARAMS) for an id outside the
        vocabulary (llama.cpp aborts the whole process on one: `std::out_of_range`)."""
        llama = self._any_llama()
        check_token_ids(ids, llama.n_vocab())
        data = await asyncio.to_thread(_detokenize, llama, ids)
        return data.decode("utf-8", errors="replace")

    async def embed(self, inputs: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        embedder = self._embedder
        if embedder is None:
            raise RequestRejected("INVALID_PARAMS", "this pool does not serve embeddings")
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(
            self._embed_executor, lambda: embedder.embed(list(inputs), normalize=True)
        )
        return tuple(tuple(float(x) for x in vector) for vector in vectors)

    def _any_llama(self) -> Llama:
        if not self._slots:
            raise RequestRejected("POOL_UNREADY", "engine is not ready")
        return self._slots[0].llama


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """What one generation applies, from its `Sampling` (pure): the sampler's arguments
    for `Llama.generate` (llama.cpp's names), the seed, stop strings, the token limit,
    how many logprob alternatives, and which constraint is compiled (`_grammar`).
    Every parameter the capability matrix says this engine honours lands here."""

    sampler: dict[str, Any]
    seed: int | None
    stop: tuple[str, ...]
    max_tokens: int
    logprobs: int | None
    constraint: str | None  # "grammar" | "json_schema" | "tools"
    tool_choice: str | None = None  # with tools: auto | none | required


def generation_plan(sampling: Sampling) -> GenerationPlan:
    return GenerationPlan(
        sampler=_sampling_args(sampling),
        seed=sampling.seed,
        stop=sampling.stop,
        max_tokens=sampling.max_tokens,
        logprobs=sampling.logprobs,
        constraint=_constraint(sampling),
        tool_choice=sampling.tool_choice,
    )


def _constraint(sampling: Sampling) -> str | None:
    if sampling.grammar is not None:
        return "grammar"
    if sampling.json_schema is not None:
        return "json_schema"
    if sampling.tools is not None and sampling.tool_choice != "none":
        return "tools"
    return None


def _sampling_args(sampling: Sampling) -> dict[str, Any]:
    args: dict[str, Any] = dict(_DEFAULTS)
    pairs = {
        "temp": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    args.update({name: value for name, value in pairs.items() if value is not None})
    return args


def check_token_ids(ids: tuple[int, ...], vocab_size: int) -> None:
    """RequestRejected(INVALID_PARAMS) naming the first id outside `0..vocab_size-1`."""
    for position, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise RequestRejected(
                "INVALID_PARAMS",
                f"tokens[{position}]: {token} is not a token id of this model "
                f"(its vocabulary has {vocab_size} tokens: 0..{vocab_size - 1})",
            )


def _detokenize(llama: Llama, ids: tuple[int, ...]) -> bytes:
    """llama-cpp-python's detokenize, in linear time (it appends to `bytes`, quadratic
    for long inputs) and without its 32-byte limit per piece. Ids must be checked."""
    vocab = llama._model.vocab
    size = 64
    buffer = ctypes.create_string_buffer(size)
    pieces = []
    for token in ids:
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n < 0:  # the piece needs -n bytes
            size = -n
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        pieces.append(buffer.raw[:n])
    data = b"".join(pieces)
    if ids and ids[0] == llama.token_bos() and data[:1] == b" ":
        return data[1:]  # as llama-cpp-python: no space after a leading BOS
    return data


def chat_formatter(llama: Llama) -> Jinja2ChatFormatter:
    """The chat template of the model `llama` holds (its GGUF's
    `tokenizer.chat_template`, else its family's published one from
    `worker_adapters.chat_templates`, else `_FALLBACK_TEMPLATE`), with the model's own BOS and
    EOS texts, rendered as Hugging Face renders it (Jinja2 sandbox, trim_blocks and
    lstrip_blocks, `raise_exception`, `add_generation_prompt`)."""
    model = llama._model
    return Jinja2ChatFormatter(
        template=_model_template(llama) or _FALLBACK_TEMPLATE,
        eos_token=model.token_get_text(llama.token_eos()),
        bos_token=model.token_get_text(llama.token_bos()),
    )


def _model_template(llama: Llama) -> str | None:
    metadata = llama.metadata
    own = metadata.get("tokenizer.chat_template")
    return own or builtin_template(metadata.get("general.architecture", ""))


def render_chat(
    formatter: Jinja2ChatFormatter,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text of `messages` (and `tools`, for a template with a tool section);
    ValueError when the template refuses them."""
    try:
        return formatter(messages=cast(Any, messages), tools=cast(Any, tools)).prompt
    except jinja2.TemplateError as exc:
        raise ValueError(f"the model's chat template refused the messages: {exc}") from exc


def _grammar(sampling: Sampling, llama: Llama) -> LlamaGrammar | None:
    """Build the constraint; ValueError (INVALID_PARAMS) when it cannot be compiled.

    llama-cpp-python does not check grammars and llama.cpp crashes on one that fails to
    parse, so every grammar is first compiled by llama.cpp's own parser here: a request
    that cannot be constrained fails closed instead of running unconstrained (or killing
    the worker).
    """
    text = _grammar_text(sampling)
    if text is None:
        return None
    grammar = LlamaGrammar.from_string(text, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(
        llama._model.vocab, grammar._grammar.encode(), grammar._root.encode()
    )
    if not sampler:
        raise ValueError("grammar does not parse (GBNF with a `root` rule expected)")
    llama_cpp.llama_sampler_free(sampler)
    return grammar


def _grammar_text(sampling: Sampling) -> str | None:
    """The GBNF of the request's constraint (`generation_plan`'s `constraint`)."""
    constraint = _constraint(sampling)
    if constraint == "grammar":
        return sampling.grammar
    if constraint == "json_schema":
        assert sampling.json_schema is not None
        return json_schema_grammar(sampling.json_schema)
    if constraint == "tools":
        assert sampling.tools is not None
        return tool_grammar(
            sampling.tools, sampling.tool_choice, sampling.parallel_tool_calls, json_schema_grammar
        )
    return None


def _common_prefix(llama: Llama, tokens: list[int]) -> int:
    cached = 0
    for old, new in zip(llama._input_ids[: llama.n_tokens], tokens, strict=False):
        if old != new:
            break
        cached += 1
    return cached


def _random_seed() -> int:
    return secrets.randbits(32)


_LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _reporting_load_progress(report: Callable[[float], None]) -> Iterator[None]:
    """Inside: a `Llama` being constructed reports llama.cpp's load progress (0..1) to
    `report`, on the loading thread.

    llama-cpp-python's `Llama` takes no progress callback, but builds its model
    parameters from `llama_cpp.llama_cpp.llama_model_default_params()`, looked up when
    it loads: for the load, that lookup returns parameters whose `progress_callback` is
    ours (it returns True: go on). Loads are serialized by a lock, so no other load sees
    the callback, and the original is restored on the way out."""
    bindings = llama_cpp.llama_cpp
    original = bindings.llama_model_default_params

    def progress(fraction: float, _: ctypes.c_void_p) -> bool:
        report(float(fraction))
        return True

    callback = bindings.llama_progress_callback(progress)  # referenced until restored

    def with_progress() -> Any:
        params = original()
        params.progress_callback = callback
        return params

    with _LOAD_LOCK:
        bindings.llama_model_default_params = with_progress
        try:
            yield
        finally:
            bindings.llama_model_default_params = original
