"""Catalog routes (API-12): list with cursor and ETag, show, verify on hosts, set state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from specs.api.models import ModelStateRequest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.catalog import FleetCatalog, FleetModel
from orchestratord.control_link import CommandFailed, ControlCommands
from orchestratord.errors import ApiError
from orchestratord.http.body import parse_body, path_param, query_integer, read_json_body

__all__ = ["catalog_routes"]


def _model_json(model: FleetModel) -> dict[str, Any]:
    entry = model.entry
    return {
        "id": entry.id,
        "ref": entry.ref,
        "sha256": entry.sha256,
        "size": entry.size,
        "architecture": entry.architecture,
        "trained_context": entry.trained_context,
        "layers": entry.layers,
        "heads": entry.heads,
        "kv_heads": entry.kv_heads,
        "lifecycle": entry.lifecycle,
        "verified_at_ms": entry.verified_at_ms or None,
        "hosts": sorted(model.hosts),
        "aliases": list(model.aliases),
    }


def catalog_routes(
    catalog: FleetCatalog, commands: ControlCommands, max_body_bytes: int
) -> list[Route]:
    def existing(request: Request) -> FleetModel:
        model_id = path_param(request, "model_id", 256)
        model = catalog.get(model_id)
        if model is None:
            raise ApiError("NOT_FOUND", f"no model {model_id} in the catalog")
        return model

    async def list_models(request: Request) -> Response:
        limit = query_integer(request.query_params.get("limit", "100"))
        if limit is None:
            raise ApiError("INVALID_PARAMS", "limit must be an integer")
        if not 1 <= limit <= 1000:
            raise ApiError("INVALID_PARAMS", "limit must be between 1 and 1000")
        cursor = request.query_params.get("cursor")
        if cursor is not None and len(cursor) > 256:
            raise ApiError("INVALID_PARAMS", "cursor must be at most 256 characters")
        if len(request.headers.get("if-none-match", "")) > 128:
            raise ApiError("INVALID_PARAMS", "If-None-Match must be at most 128 characters")
        models = [m for m in catalog.models() if cursor is None or m.entry.id > cursor]
        page = models[:limit]
        body = json.dumps(
            {
                "models": [_model_json(m) for m in page],
                "next_cursor": page[-1].entry.id if len(models) > limit else None,
            }
        )
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    async def get_model(request: Request) -> Response:
        return Response(json.dumps(_model_json(existing(request))), media_type="application/json")

    async def verify(request: Request) -> Response:
        model = existing(request)

        async def ask(host_id: str) -> dict[str, Any]:
            try:
                message = await commands.verify_model(host_id, model.entry.id)
            except CommandFailed as exc:
                return {"host_id": host_id, "ok": False, "message": f"{exc.code}: {exc}"}
            return {"host_id": host_id, "ok": True, "message": f"sha256 {message}"}

        results = await asyncio.gather(*(ask(h) for h in sorted(model.hosts)))
        ok = all(r["ok"] for r in results)
        if ok:
            catalog.mark_verified(model.entry.id, time.time_ns() // 1_000_000)
        return Response(
            json.dumps({"model_id": model.entry.id, "ok": ok, "hosts": results}),
            media_type="application/json",
        )

    async def set_state(request: Request) -> Response:
        model = existing(request)
        body = parse_body(ModelStateRequest, await read_json_body(request, max_body_bytes))
        updated = catalog.set_state(model.entry.id, body.state)
        assert updated is not None
        return Response(json.dumps(_model_json(updated)), media_type="application/json")

    return [
        Route("/v2/catalog/models", list_models, methods=["GET"]),
        Route("/v2/catalog/models/{model_id}", get_model, methods=["GET"]),
        Route("/v2/catalog/models/{model_id}/verify", verify, methods=["POST"]),
        Route("/v2/catalog/models/{model_id}/state", set_state, methods=["POST"]),
    ]
