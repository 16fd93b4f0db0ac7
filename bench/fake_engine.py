"""A fast streaming OpenAI-compatible engine for the gateway benchmarks (PERF-01, PERF-02).

    python bench/fake_engine.py --port N [--model bench] [--interval-ms 0] [--ttft-ms 0]

Serves, over HTTP/1.1 with keep-alive, on raw asyncio (uvloop when installed):

- `POST /v1/chat/completions` and `POST /v1/completions`: with `"stream": true`, a
  `chat.completion.chunk` (or `text_completion`) SSE stream of `max_tokens` token events
  (~170 bytes each, the fields OpenAI and vLLM send), a chat's role chunk first, then a
  finish chunk, a usage chunk when `stream_options.include_usage` is set, and
  `data: [DONE]`; without `stream`, one JSON body with the whole text;
- `GET /v1/models`, `GET /health`;
- `POST /extras/tokenize` and `/extras/detokenize` (llama_cpp.server's routes, which the
  `openai` adapter uses), one token per 4 bytes;
- `POST /bench/config {"interval_ms": F, "ttft_ms": F}`: change the pacing at run time,
  `GET /bench/stats`: counters (requests, streams completed and aborted, events sent).

Pacing: with `interval_ms` 0 every open stream sends one event per event-loop turn (a
batch step that costs nothing); otherwise each stream sends one event every
`interval_ms`, all streams driven by one timer (like a batched decode step), each on its
own phase. The first token leaves `ttft_ms` after the request (0: with the headers).

Cheap per event by construction: the JSON of each event is a request prefix plus one of
a few pre-encoded token tails, written with one `transport.write` (chunked framing).
A stream whose socket is paused (the reader is slow) skips its turn instead of queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

__all__ = ["EngineSettings", "Stats", "serve"]

WORDS = (
    " the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ",",
    " and", " then", " it", " runs", " away", ".", " Meanwhile", " another", " story",
    " begins", " with", " tokens", " streaming", " fast",
)  # fmt: skip
_LITERALS = tuple(json.dumps(word).encode() for word in WORDS)
_CHAT_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
_TEXT_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'
_CHAT_TOKENS = tuple(literal + _CHAT_TAIL for literal in _LITERALS)
_TEXT_TOKENS = tuple(literal + _TEXT_TAIL for literal in _LITERALS)
_DONE = b"data: [DONE]\n\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_MAX_HEAD = 64 << 10
_MAX_BODY = 8 << 20
_SLACK_S = 0.0005  # a paced timer pass also sends events due this soon


@dataclass(slots=True)
class EngineSettings:
    model: str = "bench"
    interval_ms: float = 0.0
    ttft_ms: float = 0.0
    ctx: int = 32768
    default_tokens: int = 16


@dataclass(slots=True)
class Stats:
    requests: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    events_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "streams_completed": self.streams_completed,
            "streams_aborted": self.streams_aborted,
            "events_sent": self.events_sent,
        }


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = _REASONS.get(status, "Error").encode()
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        content_type,
        len(body),
        body,
    )


def _error(status: int, message: str) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return _response(status, json.dumps(body).encode())


@dataclass(slots=True, eq=False)
class _Stream:
    """One streaming answer: `step` writes the next event; True while more follow."""

    conn: _Connection
    head: bytes  # `data: {"id":...,"choices":[{"index":0,"delta":{"content":` (or "text":)
    tokens: tuple[bytes, ...]
    total: int
    final: bytes  # finish chunk, usage chunk, [DONE], chunked terminator
    sent: int = 0
    offset: int = 0

    def step(self, stats: Stats) -> bool:
        """Send the next event. False when the stream ended or was parked (paused socket:
        `_Connection.resume_writing` hands it back to the scheduler)."""
        conn = self.conn
        if conn.closed:
            stats.streams_aborted += 1
            conn.stream_done()
            return False
        if conn.paused:
            conn.parked = self
            return False
        if self.sent < self.total:
            tokens = self.tokens
            payload = self.head + tokens[(self.offset + self.sent) % len(tokens)]
            conn.transport.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.sent += 1
            stats.events_sent += 1
            if self.sent < self.total:
                return True
        conn.transport.write(self.final)
        stats.streams_completed += 1
        conn.stream_done()
        return False


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    stream: _Stream = field(compare=False)


class _Scheduler:
    """Drives every open stream: one event per loop turn (unpaced) or per interval."""

    def __init__(self, settings: EngineSettings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self._loop = asyncio.get_running_loop()
        self._fast: list[_Stream] = []
        self._fast_scheduled = False
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, stream: _Stream) -> None:
        """A new stream: its first token now (or after `ttft_ms`), then the next ones."""
        now = self._loop.time()
        if self.settings.ttft_ms > 0:
            self._push(stream, now + self.settings.ttft_ms / 1000.0)
        elif stream.step(self.stats):
            self._next(stream, now)

    def resume(self, stream: _Stream) -> None:
        """A parked stream's socket drained: it goes on at once."""
        if stream.step(self.stats):
            self._next(stream, self._loop.time())

    def _next(self, stream: _Stream, now: float) -> None:
        interval = self.settings.interval_ms
        if interval > 0:
            self._push(stream, now + interval / 1000.0)
            return
        self._fast.append(stream)
        if not self._fast_scheduled:
            self._fast_scheduled = True
            self._loop.call_soon(self._fast_turn)

    def _fast_turn(self) -> None:
        stats = self.stats
        self._fast = [s for s in self._fast if s.step(stats)]
        if self._fast:
            self._loop.call_soon(self._fast_turn)
        else:
            self._fast_scheduled = False

    def _push(self, stream: _Stream, at: float) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._seq), stream))
        if self._timer is None or at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._paced_turn)

    def _paced_turn(self) -> None:
        self._timer = None
        loop, heap, stats = self._loop, self._heap, self.stats
        interval = self.settings.interval_ms / 1000.0
        now = loop.time()
        again: list[_Due] = []
        while heap and heap[0].at <= now + _SLACK_S:
            due = heapq.heappop(heap)
            if not due.stream.step(stats):
                continue
            if interval > 0:
                due.at = max(due.at + interval, now)
                again.append(due)
            else:  # the pacing was switched off: unpaced from now on
                self._next(due.stream, now)
        for due in again:
            heapq.heappush(heap, due)
        if heap:
            self._timer_at = heap[0].at
            self._timer = loop.call_at(self._timer_at, self._paced_turn)


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests in order, keep-alive."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buffer = b""
        self.busy = False
        self.closed = False
        self.paused = False
        self.close_after = False
        self.parked: _Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        stream, self.parked = self.parked, None
        if stream is not None:
            stream.step(self.engine.stats)  # counts the abort

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        stream, self.parked = self.parked, None
        if stream is not None:
            self.engine.scheduler.resume(stream)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next_request()

    def stream_done(self) -> None:
        self.busy = False
        if self.close_after:
            self.transport.close()
        elif self.buffer:
            self._next_request()

    def _next_request(self) -> None:
        while not self.busy and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self.transport.close()
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self.transport.write(_error(400, "bad request line"))
                self.transport.close()
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length > _MAX_BODY or "chunked" in headers.get("transfer-encoding", ""):
                self.transport.write(_error(400, "unsupported body"))
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            connection = headers.get("connection", "").lower()
            self.close_after = connection == "close" or (
                version == "HTTP/1.0" and connection != "keep-alive"
            )
            self.engine.handle(self, method, target.split("?", 1)[0], body)
            if not self.busy and self.close_after:
                self.transport.close()
                return

    def reply(self, data: bytes) -> None:
        self.transport.write(data)


class _Engine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.scheduler = _Scheduler(settings, self.stats)
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000_000)
        self._routes: dict[tuple[str, str], Callable[[_Connection, bytes], None]] = {
            ("POST", "/v1/chat/completions"): lambda c, b: self._generate(c, b, chat=True),
            ("POST", "/v1/completions"): lambda c, b: self._generate(c, b, chat=False),
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): lambda c, b: c.reply(_response(200, b'{"status":"ok"}')),
            ("POST", "/extras/tokenize"): self._tokenize,
            ("POST", "/extras/detokenize"): self._detokenize,
            ("POST", "/bench/config"): self._config,
            ("GET", "/bench/stats"): self._stats,
        }

    def handle(self, conn: _Connection, method: str, path: str, body: bytes) -> None:
        route = self._routes.get((method, path))
        if route is None:
            known = any(p == path for _, p in self._routes)
            conn.reply(_error(405 if known else 404, f"no route {method} {path}"))
            return
        try:
            route(conn, body)
        except (ValueError, TypeError, KeyError) as exc:
            conn.reply(_error(400, f"invalid request: {exc}"))

    def _models(self, conn: _Connection, body: bytes) -> None:
        model = {
            "id": self.settings.model,
            "object": "model",
            "created": 0,
            "owned_by": "fake-engine",
            "max_model_len": self.settings.ctx,
        }
        conn.reply(_response(200, json.dumps({"object": "list", "data": [model]}).encode()))

    def _tokenize(self, conn: _Connection, body: bytes) -> None:
        text = str(json.loads(body)["input"])
        tokens = list(range(max(1, len(text.encode()) // 4)))
        conn.reply(_response(200, json.dumps({"tokens": tokens}).encode()))

    def _detokenize(self, conn: _Connection, body: bytes) -> None:
        count = len(json.loads(body)["tokens"])
        conn.reply(_response(200, json.dumps({"text": "abcd" * count}).encode()))

    def _config(self, conn: _Connection, body: bytes) -> None:
        update = json.loads(body)
        if "interval_ms" in update:
            self.settings.interval_ms = max(0.0, float(update["interval_ms"]))
        if "ttft_ms" in update:
            self.settings.ttft_ms = max(0.0, float(update["ttft_ms"]))
        current = {"interval_ms": self.settings.interval_ms, "ttft_ms": self.settings.ttft_ms}
        conn.reply(_response(200, json.dumps(current).encode()))

    def _stats(self, conn: _Connection, body: bytes) -> None:
        conn.reply(_response(200, json.dumps(self.stats.as_dict()).encode()))

    def _generate(self, conn: _Connection, raw: bytes, *, chat: bool) -> None:
        request: dict[str, Any] = json.loads(raw) if raw else {}
        if not isinstance(request, dict):
            raise TypeError("body must be a JSON object")
        self.stats.requests += 1
        total = int(request.get("max_tokens") or request.get("max_completion_tokens") or 0)
        total = max(1, total or self.settings.default_tokens)
        if chat:
            messages = request.get("messages") or []
            prompt_bytes = sum(len(str(m.get("content") or "")) for m in messages)
        else:
            prompt_bytes = len(str(request.get("prompt") or ""))
        prompt_tokens = max(1, prompt_bytes // 4)
        number = next(self._ids)
        ident = f"chatcmpl-{number:012x}" if chat else f"cmpl-{number:012x}"
        created = int(time.time())
        model = json.dumps(str(request.get("model") or self.settings.model))
        kind = "chat.completion.chunk" if chat else "text_completion"
        prefix = f'data: {{"id":"{ident}","object":"{kind}","created":{created},"model":{model},'
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": total,
            "total_tokens": prompt_tokens + total,
        }
        if not request.get("stream"):
            text = "".join(WORDS[(number + i) % len(WORDS)] for i in range(total))
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            whole = {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": json.loads(model),
                "choices": [choice],
                "usage": usage,
            }
            conn.reply(_response(200, json.dumps(whole).encode()))
            return
        if chat:
            head = (prefix + '"choices":[{"index":0,"delta":{"content":').encode()
            finish = prefix + '"choices":[{"index":0,"delta":{},"logprobs":null,'
        else:
            head = (prefix + '"choices":[{"index":0,"text":').encode()
            finish = prefix + '"choices":[{"index":0,"text":"","logprobs":null,'
        final = [(finish + '"finish_reason":"length"}]}\n\n').encode()]
        options = request.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            final.append((prefix + f'"choices":[],"usage":{json.dumps(usage)}}}\n\n').encode())
        final.append(_DONE)
        opening = _SSE_HEAD
        if chat:
            role = prefix + (
                '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                '"logprobs":null,"finish_reason":null}]}\n\n'
            )
            opening += _chunked(role.encode())
        conn.busy = True
        conn.reply(opening)
        stream = _Stream(
            conn,
            head,
            _CHAT_TOKENS if chat else _TEXT_TOKENS,
            total,
            _chunked(b"".join(final)) + b"0\r\n\r\n",
            offset=number,
        )
        self.scheduler.add(stream)


async def serve(host: str, port: int, settings: EngineSettings, port_file: Path | None) -> None:
    engine = _Engine(settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(engine), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:
        scratch = port_file.with_suffix(".tmp")
        scratch.write_text(str(bound))
        scratch.replace(port_file)
    print(f"fake engine serving {settings.model} on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    parser.add_argument("--model", default="bench", help="the served model name")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="0: unpaced")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--ctx", type=int, default=32768, help="max_model_len in /v1/models")
    parser.add_argument("--default-tokens", type=int, default=16, help="without max_tokens")
    args = parser.parse_args(argv)
    settings = EngineSettings(
        args.model, args.interval_ms, args.ttft_ms, args.ctx, args.default_tokens
    )
    coroutine = serve(args.host, args.port, settings, args.port_file)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
