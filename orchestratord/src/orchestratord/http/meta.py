"""Capabilities (API-09) and tokenize/detokenize (API-14).

Capabilities are computed from the registry's latest snapshots on each call (cheap:
one pass over the pools). Tokenize and detokenize are served by the first ready replica
of a pool of the model; a model with no ready pool is 503 `POOL_UNREADY`. Their input is
checked first (SEC-03): text under the prompt limit, at most `max_token_ids` ids, each
within the model's vocabulary (its size comes from the host's inventory; llama.cpp
aborts the whole worker on an id outside it, so the worker checks too).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pydantic
from adapter_host import ReplicaKey
from specs.api.models import DetokenizeRequest, TokenizeRequest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from worker_adapters.capabilities import honoured
from worker_adapters.errors import AdapterError, RequestRejected

from orchestratord.admission.validate import Refusal, text_within_limit, token_ids_valid
from orchestratord.core import Orchestrator
from orchestratord.errors import ApiError
from orchestratord.http.body import parse_body, read_json_body
from orchestratord.http.translate import refusal_error

__all__ = ["API_VERSION", "meta_routes", "version_in_range"]

API_VERSION = "2.0.0"
_WORKLOADS = ("completion", "chat", "embedding")
_GENERATING = ("completion", "chat")
_BOUND = re.compile(r"^(>=|<=|>|<|==)?\s*(\d+(?:\.\d+){0,2})$")
# The whole `api_version` value, as the document's pattern states it.
_RANGE_BOUND = r" *(?:>=|<=|>|<|==)? *[0-9]+(?:\.[0-9]+){0,2} *"
_RANGE = re.compile(f"{_RANGE_BOUND}(?:,{_RANGE_BOUND})*")


def _version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def version_in_range(version: str, wanted: str) -> bool:
    """`wanted` is a major version (`2`) or bounds like `>=2.0,<3`; ValueError if malformed."""
    have = _version(version)
    if _RANGE.fullmatch(wanted) is None:
        raise ValueError(
            f"cannot read api_version {wanted!r}: a major version (2) or bounds (>=2.0,<3)"
        )
    if wanted.isdigit():
        return have[0] == int(wanted)
    for bound in wanted.split(","):
        match = _BOUND.match(bound.strip())
        if match is None:
            raise ValueError(f"cannot read version bound {bound!r}")
        op, limit = match.group(1) or "==", _version(match.group(2))
        ok = {
            ">=": have >= limit,
            "<=": have <= limit,
            ">": have > limit,
            "<": have < limit,
            "==": have == limit,
        }[op]
        if not ok:
            return False
    return True


def _json(body: object) -> Response:
    return Response(json.dumps(body), media_type="application/json")


def _parse(model: type[pydantic.BaseModel], raw: bytes) -> Any:
    return parse_body(model, raw)


def _honoured_params(engine: str, workloads: list[str]) -> dict[str, list[str]]:
    """The request parameters `engine` honours per generating workload it serves (the
    capability matrix, API-16)."""
    return {w: sorted(honoured(engine, w)) for w in workloads if w in _GENERATING}


def meta_routes(orchestrator: Orchestrator) -> list[Route]:
    config = orchestrator.config

    def capabilities_body() -> dict[str, Any]:
        now = time.monotonic()
        free = {v.pool_id: v.slots_free for v in orchestrator.registry.views(now)}
        pools: list[dict[str, Any]] = []
        engines: dict[str, dict[str, Any]] = {}
        for pool in orchestrator.registry.pools():
            if not (pool.ready and orchestrator.registry.pool_live(pool.pool_id, now)):
                continue
            workloads = [w for w in _WORKLOADS if w in pool.features]
            features = sorted(set(pool.features) - set(_WORKLOADS))
            params = _honoured_params(pool.engine, workloads)
            pools.append(
                {
                    "pool_id": pool.pool_id,
                    "engine": pool.engine,
                    "engine_version": pool.engine_version,
                    "models": [
                        {
                            "id": pool.model_id,
                            "digest": pool.model_digest,
                            "aliases": sorted(pool.model_aliases),
                        }
                    ],
                    "ctx_max": pool.ctx,
                    "max_tokens_out": max(0, pool.ctx - 1),
                    "slots_total": pool.slots_total,
                    "slots_free": free.get(pool.pool_id, 0),
                    "workloads": workloads,
                    "features": features,
                    "params": params,
                }
            )
            engine = engines.setdefault(
                pool.engine,
                {
                    "engine": pool.engine,
                    "engine_versions": set(),
                    "pools": [],
                    "ctx_max": 0,
                    "workloads": set(),
                    "features": set(),
                    "params": {},
                },
            )
            engine["engine_versions"].add(pool.engine_version)
            engine["pools"].append(pool.pool_id)
            engine["ctx_max"] = max(engine["ctx_max"], pool.ctx)
            engine["workloads"].update(workloads)
            engine["features"].update(features)
            engine["params"].update(params)
        return {
            "api_version": API_VERSION,
            "pools": pools,
            "engines": [
                {
                    **e,
                    "engine_versions": sorted(e["engine_versions"]),
                    "workloads": [w for w in _WORKLOADS if w in e["workloads"]],
                    "features": sorted(e["features"]),
                }
                for _, e in sorted(engines.items())
            ],
        }

    async def capabilities(request: Request) -> Response:
        wanted = request.query_params.get("api_version")
        if wanted is not None:
            try:
                fits = version_in_range(API_VERSION, wanted)
            except ValueError as exc:
                raise ApiError("INVALID_PARAMS", str(exc)) from None
            if not fits:
                raise ApiError(
                    "INVALID_PARAMS",
                    f"this server speaks api_version {API_VERSION}, outside {wanted!r}",
                )
        return _json(capabilities_body())

    def replica_for(model: str) -> ReplicaKey:
        now = time.monotonic()
        views = orchestrator.registry.views(now)
        serving = [v for v in views if v.serves(model)]
        if not serving:
            raise ApiError("MODEL_NOT_FOUND", f"no pool serves model {model!r}")
        for view in sorted(serving, key=lambda v: v.pool_id):
            ready = [r for r in view.replicas if r.ready]
            if view.ready and view.lease_fresh and ready:
                return ReplicaKey(view.pool_id, ready[0].index)
        raise ApiError(
            "POOL_UNREADY", f"no pool of {model!r} is ready", retriable=True, retry_after_ms=1000
        )

    async def call(key: ReplicaKey, coroutine: Any) -> Any:
        try:
            return await coroutine
        except RequestRejected as exc:
            code = exc.code if exc.code != "ENGINE_ERROR" else "INVALID_PARAMS"
            unready = code == "POOL_UNREADY"
            raise ApiError(
                code,
                str(exc),
                pool_id=key.pool_id,
                retriable=unready,
                retry_after_ms=1000 if unready else None,
            ) from exc
        except (AdapterError, LookupError) as exc:
            raise ApiError(
                "POOL_UNREADY",
                f"pool {key.pool_id} did not answer: {exc}",
                retriable=True,
                retry_after_ms=1000,
                pool_id=key.pool_id,
            ) from exc

    def vocab_size(pool_id: str) -> int | None:
        """The vocabulary size of the pool's model, from its host's inventory (the
        model file's GGUF metadata); None when unknown (the engine checks then)."""
        pool = orchestrator.registry.pool(pool_id)
        host = orchestrator.registry.host(pool.host_id) if pool is not None else None
        if pool is None or host is None:
            return None
        sizes = [m.vocab_size for m in host.inventory.models if m.sha256 == pool.model_digest]
        return sizes[0] if sizes and sizes[0] > 0 else None

    def refuse(refusal: Refusal | None) -> None:
        if refusal is not None:
            raise refusal_error(refusal)

    async def tokenize(request: Request) -> Response:
        body: TokenizeRequest = _parse(
            TokenizeRequest, await read_json_body(request, config.max_body_bytes)
        )
        refuse(text_within_limit(body.text, max_bytes=config.max_prompt_bytes))
        key = replica_for(body.model)
        result = await call(
            key, orchestrator.host.tokenize(key, body.text, with_offsets=bool(body.with_offsets))
        )
        reply: dict[str, Any] = {
            "model": body.model,
            "pool_id": key.pool_id,
            "tokens": list(result.ids),
        }
        if body.with_offsets:
            reply["offsets"] = list(result.byte_offsets)
        return _json(reply)

    async def detokenize(request: Request) -> Response:
        body: DetokenizeRequest = _parse(
            DetokenizeRequest, await read_json_body(request, config.max_body_bytes)
        )
        ids = tuple(t.root for t in body.tokens)
        refuse(token_ids_valid(ids, max_token_ids=config.max_token_ids, vocab_size=None))
        key = replica_for(body.model)
        vocab = vocab_size(key.pool_id)
        refuse(token_ids_valid(ids, max_token_ids=config.max_token_ids, vocab_size=vocab))
        text = await call(key, orchestrator.host.detokenize(key, ids))
        return _json({"model": body.model, "pool_id": key.pool_id, "text": text})

    return [
        Route("/v2/meta/capabilities", capabilities, methods=["GET"]),
        Route("/v2/tokenize", tokenize, methods=["POST"]),
        Route("/v2/detokenize", detokenize, methods=["POST"]),
    ]
