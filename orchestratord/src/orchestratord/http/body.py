"""Reading request bodies: JSON content type required, size capped (SEC-03); strict
validation that still takes `5.0` where the document says integer (JSON Schema does)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
from starlette.requests import ClientDisconnect, Request

from orchestratord.errors import ApiError

__all__ = ["read_json_body", "validate_strict"]

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


async def read_json_body(request: Request, limit: int) -> bytes:
    """The body, or ApiError: 415 for a non-JSON content type, 413 past `limit` bytes."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError("INVALID_PARAMS", "Content-Type must be application/json", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("INVALID_PARAMS", f"request body exceeds {limit} bytes", status=413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError("INVALID_PARAMS", f"request body exceeds {limit} bytes", status=413)
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or closed by the read deadline: nobody hears this
        raise ApiError("INVALID_PARAMS", "the client left before sending the whole body") from None
    return b"".join(chunks)


def validate_strict(model: type[ModelT], raw: bytes) -> ModelT:
    """`model` from JSON in strict mode (no "10" for 10, no true for 1.0), except that an
    integral number such as `5.0` is an integer, as JSON Schema and the document say.
    The fast path parses once; only a body refused for a non-integer is read again."""
    try:
        return model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        if not any(e["type"] == "int_type" for e in exc.errors(include_url=False)):
            raise
    return model.model_validate(_integral_as_int(json.loads(raw)), strict=True)


def _integral_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_as_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_as_int(v) for v in value]
    return value
