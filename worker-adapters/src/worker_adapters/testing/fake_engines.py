"""Fake engine servers, one per HTTP engine (fakes, for tests only).

Each imitates its engine's routes, auth rules, health semantics and error shapes as
written down in `shared/reference/engine-protocols-reliability.md` (§A1-§A4); the
generation routes replay transcripts (`fake_server.FakeEngine`). They run no model:
their tokenizer is bytes (one token per UTF-8 byte).

    fake              streams                       health                  auth on
    FakeLlamaServer   /completion, chat route       /health 200, 503 loading  all but health, models
    FakeOpenAIServer  /v1/completions, chat route   none (llama_cpp.server)   everything
    FakeVllmServer    /v1/completions, chat route   /health 200, 503 empty    /v1 only
    FakeTgiServer     /generate_stream, chat route  /health 200, 503          POST routes
"""

from __future__ import annotations

import ssl

from aiohttp import web

from worker_adapters.testing.fake_server import FakeEngine, json_response

__all__ = ["FakeLlamaServer", "FakeOpenAIServer", "FakeTgiServer", "FakeVllmServer"]

MODEL = "fake-model"


def _bytes_of(text: str) -> list[int]:
    return list(text.encode())


def _text_of(ids: list[int]) -> str:
    return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")


def _vector(text: str) -> list[float]:
    return [b / 255.0 for b in text.encode()[:4].ljust(4)]


class FakeLlamaServer(FakeEngine):
    """llama-server (§A1): 503 on every route but the model list while `loading`."""

    engine = "llamacpp"

    def __init__(
        self,
        *,
        api_key: str = "",
        total_slots: int = 2,
        n_ctx: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(api_key=api_key, ssl_context=ssl_context)
        self.loading = False
        self.total_slots = total_slots
        self.n_ctx = n_ctx
        for path in ("/completion", "/completions", "/v1/completions", "/v1/chat/completions"):
            self.route_stream(path)
        router = self.app.router
        router.add_get("/health", self._health)
        router.add_get("/v1/health", self._health)
        router.add_get("/props", self._props)
        router.add_get("/slots", self._slots)
        router.add_get("/metrics", self._metrics)
        router.add_get("/v1/models", self._models)
        router.add_post("/tokenize", self._tokenize)
        router.add_post("/detokenize", self._detokenize)
        router.add_post("/embedding", self._embedding)

    def gate(self, request: web.Request) -> web.StreamResponse | None:
        if self.loading and request.path not in ("/models", "/v1/models", "/api/tags"):
            error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
            return json_response({"error": error}, 503)
        return None

    def is_public(self, request: web.Request) -> bool:
        return request.path in ("/health", "/v1/health", "/models", "/v1/models", "/")

    def unauthorized(self) -> web.Response:
        error = {"message": "Invalid API Key", "type": "authentication_error", "code": 401}
        return json_response({"error": error}, 401)

    async def _health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _props(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "default_generation_settings": {"n_ctx": self.n_ctx, "params": {}},
                "total_slots": self.total_slots,
                "model_path": "/models/fake.gguf",
                "chat_template": "{{ messages }}",
                "build_info": "b0000-fake",
            }
        )

    async def _slots(self, request: web.Request) -> web.Response:
        slots = [{"id": i, "is_processing": i < self.active} for i in range(self.total_slots)]
        return json_response(slots)

    async def _metrics(self, request: web.Request) -> web.Response:
        text = (
            "# HELP llamacpp:requests_processing Number of requests processing.\n"
            "# TYPE llamacpp:requests_processing gauge\n"
            f"llamacpp:requests_processing {self.active}\n"
            "llamacpp:requests_deferred 0\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [{"id": MODEL, "owned_by": "llamacpp"}]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = _bytes_of(body["content"])
        if not body.get("with_pieces"):
            return json_response({"tokens": ids})
        tokens = [{"id": b, "piece": chr(b) if b < 128 else [b]} for b in ids]
        return json_response({"tokens": tokens})

    async def _detokenize(self, request: web.Request) -> web.Response:
        return json_response({"content": _text_of((await request.json())["tokens"])})

    async def _embedding(self, request: web.Request) -> web.Response:
        content = (await request.json())["content"]
        texts = content if isinstance(content, list) else [content]
        rows = [{"index": i, "embedding": [_vector(t)]} for i, t in enumerate(texts)]
        return json_response(rows)


class FakeOpenAIServer(FakeEngine):
    """An OpenAI-compatible server shaped like llama_cpp.server (§A2.2): no /health."""

    engine = "openai"

    def __init__(self, *, api_key: str = "") -> None:
        super().__init__(api_key=api_key)
        self.route_stream("/v1/completions")
        self.route_stream("/v1/chat/completions")
        router = self.app.router
        router.add_get("/v1/models", self._models)
        router.add_post("/extras/tokenize", self._tokenize)
        router.add_post("/extras/detokenize", self._detokenize)
        router.add_post("/v1/embeddings", self._embeddings)

    def unauthorized(self) -> web.Response:
        return json_response({"detail": "Invalid API key"}, 401)

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "owned_by": "me", "permissions": []}
        return json_response({"object": "list", "data": [model]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        return json_response({"tokens": _bytes_of((await request.json())["input"])})

    async def _detokenize(self, request: web.Request) -> web.Response:
        return json_response({"text": _text_of((await request.json())["tokens"])})

    async def _embeddings(self, request: web.Request) -> web.Response:
        texts = (await request.json())["input"]
        data = [
            {"index": i, "embedding": _vector(t), "object": "embedding"}
            for i, t in enumerate(texts)
        ]
        return json_response({"object": "list", "data": data, "model": MODEL})


class FakeVllmServer(FakeEngine):
    """`vllm serve` (§A3): /health 200 or 503 (engine dead), auth on `/v1` only."""

    engine = "vllm"

    def __init__(self, *, api_key: str = "", version: str = "0.12.1") -> None:
        super().__init__(api_key=api_key)
        self.dead = False
        self.version = version
        self.route_stream("/v1/completions")
        self.route_stream("/v1/chat/completions")
        router = self.app.router
        router.add_get("/health", self._health)
        router.add_get("/version", self._version)
        router.add_get("/v1/models", self._models)
        router.add_post("/tokenize", self._tokenize)
        router.add_post("/detokenize", self._detokenize)

    def is_public(self, request: web.Request) -> bool:
        return not request.path.startswith("/v1")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.dead else 200)

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": self.version})

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "owned_by": "vllm", "root": "/models/fake"}
        return json_response({"object": "list", "data": [{**model, "max_model_len": 8192}]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        ids = _bytes_of((await request.json())["prompt"])
        return json_response({"count": len(ids), "max_model_len": 8192, "tokens": ids})

    async def _detokenize(self, request: web.Request) -> web.Response:
        return json_response({"prompt": _text_of((await request.json())["tokens"])})


class FakeTgiServer(FakeEngine):
    """TGI's router (§A4): /health 200 or 503, auth on the POST inference routes."""

    engine = "tgi"

    def __init__(self, *, api_key: str = "") -> None:
        super().__init__(api_key=api_key)
        self.unhealthy = False
        # What `/info` reports (the launcher's --model-id, --max-total-tokens, ...).
        self.model_id = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
        self.max_total_tokens = 4096
        self.max_concurrent_requests = 128
        self.route_stream("/generate_stream")
        self.route_stream("/v1/chat/completions")
        router = self.app.router
        router.add_get("/health", self._health)
        router.add_get("/info", self._info)
        router.add_get("/v1/models", self._models)
        router.add_post("/tokenize", self._tokenize)

    def is_public(self, request: web.Request) -> bool:
        return request.method == "GET"

    def unauthorized(self) -> web.Response:
        return json_response({"error": "Unauthorized", "error_type": "authentication"}, 401)

    async def _health(self, request: web.Request) -> web.Response:
        if self.unhealthy:
            return json_response({"error": "unhealthy", "error_type": "healthcheck"}, 503)
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        info = {
            "model_id": self.model_id,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_input_tokens": self.max_total_tokens - 1,
            "max_total_tokens": self.max_total_tokens,
            "version": "3.3.6-dev0",
        }
        return json_response(info)

    async def _models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [{"id": MODEL, "owned_by": "tgi"}]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        text = (await request.json())["inputs"]
        tokens = []
        for start, byte in enumerate(text.encode()):
            tokens.append({"id": byte, "text": chr(byte), "start": start, "stop": start + 1})
        return json_response(tokens)
