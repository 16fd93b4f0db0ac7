"""The Triton engine program: a GGUF model decoded by llama-cpp-python, served by Triton
Inference Server through PyTriton, for the `triton` adapter (ADP-02).

A standalone script run by the managed Triton venv's python (see `triton_venv.py`); it
imports only the stdlib, numpy, pytriton and llama_cpp, never the workspace. It binds
three models on `--host` (127.0.0.1 by default) and prints `TRITON_ENGINE_READY ...`
once they all answer:

- `{name}` (decoupled, streamed by `POST /v2/models/{name}/generate_stream`). Inputs:
  `text_input` (a raw prompt) or `messages` (JSON chat turns, rendered by the model's
  own template), `request_id`, `max_tokens`, `temperature`, `top_k`, `top_p`,
  `min_p`, `repeat_penalty`, `presence_penalty`, `frequency_penalty`, `seed`, `stop`
  (a list). Every response carries the outputs `event`, `text_output`, `tokens`,
  `final`, `finish_reason`, `tokens_in`, `tokens_out`. The stream is one `start`
  response (tokens_in), then one `token` response per whole-character text piece (UTF-8
  split across tokens is held until it completes; stop strings never reach the client),
  then one `end` response with `final` true, the finish reason (`length`, `stop` or
  `cancelled`) and the token counts. The start response goes out before any check, so
  a request the model refuses (bad sampling value, prompt beyond the context) ends in
  an error frame under HTTP 200, exactly Triton's mid-stream failure mode; its last line
  is `RequestRefused: CODE: message`.
- `{name}_cancel`: input `request_id`; sets that generation's cancel flag, checked
  between tokens. The id is remembered (bounded), so a cancel that overtakes its
  generation still stops it. Output `cancelled`: whether a running one was found.
- `{name}_stats`: no inputs; the engine's counters (`tokens_generated_total`,
  `generations_total`, `generations_cancelled_total`, `generations_active`) and facts
  (`ctx`, `chat_template` 0/1, `engine_version`, `model_path`).

Cancellation, as found in PyTriton 0.7.0 (Triton 2.51): when the HTTP client of a
generate_stream request disconnects, Triton's HTTP frontend cancels the Triton request
and the Python backend reports `is_cancelled()` true, but PyTriton's proxy model never
looks at it and has no channel back to the inference callable, which keeps producing
tokens nobody reads. So a dropped connection alone does not stop decoding here; the
`{name}_cancel` call does, between two tokens.

One generation decodes at a time (llama.cpp contexts are not shareable); others wait
for the lock. Every llama call runs on one worker thread, one token per call, so the
PyTriton event loop never blocks. SIGTERM or SIGINT stops Triton and exits 0; exit 1 if
the model cannot be loaded, 2 on bad arguments. One file, a little past the house size,
because the venv's python runs it by path and it may import nothing of ours.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import collections
import dataclasses
import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from pytriton.model_config import ModelConfig, Tensor  # type: ignore[import-not-found]
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found]

READY_MARKER = "TRITON_ENGINE_READY"
_LOG = logging.getLogger("triton_llamacpp")
_REMEMBERED_CANCELS = 1024
_DEFAULTS: dict[str, float] = {"temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
_FLOAT_INPUTS = ("temperature", "top_p", "min_p", "repeat_penalty")
_FLOAT_INPUTS_SIGNED = ("presence_penalty", "frequency_penalty")
STATS_NUMBERS = (
    "tokens_generated_total",
    "generations_total",
    "generations_cancelled_total",
    "generations_active",
    "ctx",
    "chat_template",
)
T = TypeVar("T")


class RequestRefused(ValueError):
    """The model refuses this request. The error frame's last line reads
    `RequestRefused: CODE: message` with an API-07 code (INVALID_PARAMS, CONTEXT_OVERFLOW),
    which the `triton` adapter reads back; any other error frame is an engine failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, slots=True)
class Params:
    request_id: str
    max_tokens: int
    sampling: dict[str, Any]
    seed: int
    stops: tuple[str, ...]


@dataclass(slots=True)
class Counters:
    tokens_generated_total: int = 0
    generations_total: int = 0
    generations_cancelled_total: int = 0
    generations_active: int = 0


@dataclass(slots=True)
class CancelBook:
    """Cancel flags by request id, shared by the generation and cancel models' threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, threading.Event] = field(default_factory=dict)
    remembered: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=_REMEMBERED_CANCELS)
    )

    def register(self, request_id: str) -> threading.Event:
        event = threading.Event()
        with self.lock:
            if request_id in self.remembered:
                event.set()
            self.running[request_id] = event
        return event

    def release(self, request_id: str) -> None:
        with self.lock:
            self.running.pop(request_id, None)

    def cancel(self, request_id: str) -> bool:
        with self.lock:
            self.remembered.append(request_id)
            event = self.running.get(request_id)
        if event is None:
            return False
        event.set()
        return True


class TextPieces:
    """Whole UTF-8 characters out of token bytes; text that may start a stop string is held."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        pending = self._held + self._decoder.decode(piece)
        cuts = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if cuts:
            self.stopped, self._held = True, ""
            return pending[: min(cuts)]
        keep = max(
            (n for s in self._stops for n in range(1, len(s)) if pending.endswith(s[:n])), default=0
        )
        self._held = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def finish(self) -> str:
        if self.stopped:
            return ""
        text, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return text


class Engine:
    """The model and its one decoding thread; the three models' infer callables."""

    def __init__(self, llama: Llama, ctx: int, model_path: str) -> None:
        self._llama = llama
        self._ctx = ctx
        self._model_path = model_path
        self._chat = _chat_formatter(llama)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llama")
        self._decode_lock: asyncio.Lock | None = None
        self._cancels = CancelBook()
        self.counters = Counters()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def generate(self, requests: list[Any]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        """Infer callable of `{name}`: start, token*, end (or an error after start)."""
        data: dict[str, np.ndarray] = requests[0].data
        request_id = _text(data, "request_id") if "request_id" in data else secrets.token_hex(8)
        cancel = self._cancels.register(request_id)  # before `start`: a cancel can follow it
        try:
            async for response in self._generate(data, request_id, cancel):
                yield response
        finally:
            self._cancels.release(request_id)

    async def _generate(
        self, data: dict[str, np.ndarray], request_id: str, cancel: threading.Event
    ) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        try:
            prompt, add_bos = self._prompt(data)
        except RequestRefused:
            yield [_response("start")]  # so the refusal is an error frame under HTTP 200
            raise
        tokens = await self._run(self._llama.tokenize, prompt, add_bos, True)
        yield [_response("start", tokens_in=len(tokens))]
        params = parse_params(data, request_id)
        if len(tokens) + params.max_tokens > self._ctx:
            raise RequestRefused(
                "CONTEXT_OVERFLOW",
                f"prompt ({len(tokens)} tokens) + max_tokens ({params.max_tokens}) "
                f"exceeds the context of {self._ctx} tokens",
            )
        if self._decode_lock is None:
            self._decode_lock = asyncio.Lock()  # bound to PyTriton's handler loop
        async with self._decode_lock:
            async for response in self._decode(tokens, params, cancel):
                yield response

    def _prompt(self, data: dict[str, np.ndarray]) -> tuple[bytes, bool]:
        """The prompt's bytes and whether to add BOS: `text_input` as is, or `messages`
        (a JSON list of {role, content}) rendered by the model's own chat template."""
        if "messages" not in data:
            if "text_input" not in data:
                raise RequestRefused("INVALID_PARAMS", "text_input or messages is required")
            return _text(data, "text_input").encode(), True
        if self._chat is None:
            raise RequestRefused("INVALID_PARAMS", "this model has no chat template")
        try:
            turns = [{"role": str(t["role"]), "content": str(t["content"])}
                     for t in json.loads(_text(data, "messages"))]  # fmt: skip
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestRefused("INVALID_PARAMS", f"messages: {exc}") from exc
        return self._chat(messages=cast(Any, turns)).prompt.encode(), False

    async def _decode(
        self, prompt: list[int], params: Params, cancel: threading.Event
    ) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        counters = self.counters
        counters.generations_total += 1
        counters.generations_active += 1
        await self._run(self._llama.set_seed, params.seed)
        stream = self._llama.generate(prompt, reset=True, **params.sampling)
        pieces = TextPieces(params.stops)
        produced = pending = 0
        finish = "length"
        try:
            while produced < params.max_tokens:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                step = await self._run(_next_piece, self._llama, stream)
                if step is None:
                    finish = "stop"
                    break
                produced += 1
                pending += 1
                counters.tokens_generated_total += 1
                text = pieces.feed(step)
                if text:
                    yield [_response("token", text, tokens=pending, tokens_out=produced)]
                    pending = 0
                if pieces.stopped:
                    finish = "stop"
                    break
        finally:
            # Counted before `active` drops: a client seeing no active generation must
            # also see this one's cancellation (the stats are read between the two).
            if finish == "cancelled":
                counters.generations_cancelled_total += 1
            counters.generations_active -= 1
            await self._run(stream.close)
        if finish == "cancelled":
            _LOG.info("generation %s cancelled after %d tokens", params.request_id, produced)
        tail = pieces.finish() if finish != "cancelled" else ""
        if tail:
            yield [_response("token", tail, tokens=pending, tokens_out=produced)]
            pending = 0
        yield [
            _response(
                "end",
                "",
                tokens=pending,
                tokens_in=len(prompt),
                tokens_out=produced,
                final=True,
                finish_reason=finish,
            )
        ]

    def cancel(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Infer callable of `{name}_cancel`. Never blocks."""
        request_id = _text(requests[0].data, "request_id")
        found = self._cancels.cancel(request_id)
        return [{"cancelled": np.array([found], dtype=np.bool_)}]

    def stats(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Infer callable of `{name}_stats`: counters and facts."""
        facts = {"ctx": self._ctx, "chat_template": int(self._chat is not None)}
        numbers = {**dataclasses.asdict(self.counters), **facts}
        reply = {k: np.array([numbers[k]], dtype=np.int64) for k in STATS_NUMBERS}
        reply["engine_version"] = _bytes_array(f"llama-cpp-python {llama_cpp.__version__}")
        reply["model_path"] = _bytes_array(self._model_path)
        return [reply for _ in requests]


def _chat_formatter(llama: Llama) -> Jinja2ChatFormatter | None:
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    model = llama._model
    return Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(llama.token_eos()),
        bos_token=model.token_get_text(llama.token_bos()),
    )


def _next_piece(llama: Llama, stream: Any) -> bytes | None:
    """One decoding step on the llama thread: the next token's bytes, None at end of text."""
    token = next(stream)
    if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
        return None
    return bytes(llama.detokenize([token]))


def parse_params(data: dict[str, np.ndarray], request_id: str) -> Params:
    """Read and check the optional sampling inputs; RequestRefused names the bad one."""
    max_tokens = _number(data, "max_tokens", 16)
    if max_tokens < 1:
        raise RequestRefused("INVALID_PARAMS", f"max_tokens must be at least 1, got {max_tokens}")
    sampling: dict[str, Any] = dict(_DEFAULTS)
    for name in (*_FLOAT_INPUTS, *_FLOAT_INPUTS_SIGNED, "top_k"):
        if name not in data:
            continue
        value = float(data[name].reshape(-1)[0])
        if name in _FLOAT_INPUTS and value < 0:
            raise RequestRefused("INVALID_PARAMS", f"{name} must not be negative, got {value}")
        sampling["temp" if name == "temperature" else name] = value
    if not 0.0 <= sampling["top_p"] <= 1.0 or not 0.0 <= sampling["min_p"] <= 1.0:
        raise RequestRefused("INVALID_PARAMS", "top_p and min_p must lie in [0, 1]")
    sampling["top_k"] = int(sampling["top_k"])
    seed = _number(data, "seed", secrets.randbits(32)) & 0xFFFFFFFF
    stops = tuple(s.decode("utf-8", "replace") for s in data.get("stop", np.array([])).reshape(-1))
    return Params(request_id, max_tokens, sampling, seed, stops)


def _number(data: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(data[name].reshape(-1)[0]) if name in data else default


def _text(data: dict[str, np.ndarray], name: str) -> str:
    value = data[name].reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bytes_array(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype=np.object_)


def _response(
    event: str,
    text: str = "",
    *,
    tokens: int = 0,
    tokens_in: int = 0,
    tokens_out: int = 0,
    final: bool = False,
    finish_reason: str = "",
) -> dict[str, np.ndarray]:
    return {
        "event": _bytes_array(event),
        "text_output": _bytes_array(text),
        "tokens": np.array([tokens], dtype=np.int32),
        "tokens_in": np.array([tokens_in], dtype=np.int32),
        "tokens_out": np.array([tokens_out], dtype=np.int32),
        "final": np.array([final], dtype=np.bool_),
        "finish_reason": _bytes_array(finish_reason),
    }


_INPUTS: dict[Any, tuple[str, ...]] = {
    bytes: ("text_input", "messages", "request_id"),
    np.int32: ("max_tokens", "top_k"),
    np.int64: ("seed",),
    np.float32: (*_FLOAT_INPUTS, *_FLOAT_INPUTS_SIGNED),
}
_OUTPUTS: dict[Any, tuple[str, ...]] = {
    bytes: ("event", "text_output", "finish_reason"),
    np.int32: ("tokens", "tokens_in", "tokens_out"),
    np.bool_: ("final",),
}
_STATS_OUTPUTS: dict[Any, tuple[str, ...]] = {
    np.int64: STATS_NUMBERS,
    bytes: ("engine_version", "model_path"),
}


def _tensors(spec: dict[Any, tuple[str, ...]], *, optional: bool = False) -> list[Any]:
    return [
        Tensor(name=name, dtype=dtype, shape=(1,), optional=optional)
        for dtype, names in spec.items()
        for name in names
    ]


def bind_models(triton: Any, engine: Engine, name: str) -> None:
    """Bind `{name}`, `{name}_cancel` and `{name}_stats`; returns once all are loaded."""
    unbatched = ModelConfig(batching=False)
    triton.bind(
        model_name=name,
        infer_func=engine.generate,
        inputs=[
            *_tensors(_INPUTS, optional=True),
            Tensor(name="stop", dtype=bytes, shape=(-1,), optional=True),
        ],
        outputs=_tensors(_OUTPUTS),
        config=ModelConfig(batching=False, decoupled=True),
        strict=True,
    )
    triton.bind(
        model_name=f"{name}_cancel",
        infer_func=engine.cancel,
        inputs=[Tensor(name="request_id", dtype=bytes, shape=(1,))],
        outputs=[Tensor(name="cancelled", dtype=np.bool_, shape=(1,))],
        config=unbatched,
        strict=True,
    )
    triton.bind(
        model_name=f"{name}_stats",
        infer_func=engine.stats,
        inputs=[],
        outputs=_tensors(_STATS_OUTPUTS),
        config=unbatched,
        strict=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--host", default="127.0.0.1", help="address every port binds")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--ctx", type=int, default=4096, help="context length, tokens")
    parser.add_argument(
        "--threads", type=int, default=0, help="decode threads; 0 = library default"
    )
    parser.add_argument("--model-name", default="llm", help="Triton model name")
    return parser.parse_args(argv)


def _load(args: argparse.Namespace) -> Llama:
    extra: dict[str, Any] = {"n_threads": args.threads} if args.threads > 0 else {}
    return Llama(args.model, n_ctx=args.ctx, n_gpu_layers=0, verbose=False, **extra)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        llama = _load(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"TRITON_ENGINE_FAILED cannot load model {args.model}: {exc}", flush=True)
        return 1
    engine = Engine(llama, args.ctx, args.model)
    config = TritonConfig(
        http_address=args.host, http_port=args.http_port,
        grpc_address=args.host, grpc_port=args.grpc_port,
        metrics_address=args.host, metrics_port=args.metrics_port,
        allow_gpu_metrics=False, exit_timeout_secs=5,
    )  # fmt: skip
    # serve() stops Triton on KeyboardInterrupt; SIGTERM takes the same way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with Triton(config=config) as triton:
            bind_models(triton, engine, args.model_name)
            print(
                f"{READY_MARKER} http={args.host}:{args.http_port} model={args.model_name} "
                f"ctx={args.ctx} llama_cpp={llama_cpp.__version__}",
                flush=True,
            )
            triton.serve()
    except KeyboardInterrupt:
        _LOG.info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
