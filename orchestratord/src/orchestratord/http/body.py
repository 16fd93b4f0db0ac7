"""Reading request bodies: JSON content type required, size capped (SEC-03); strict
validation that still takes `5.0` where the document says integer (JSON Schema does),
and refuses `null` where the document does not allow it (`parse_body`)."""

from __future__ import annotations

import functools
import json
import re
from typing import Any, TypeVar

import pydantic
import yaml
from starlette.requests import ClientDisconnect, Request

from orchestratord.errors import ApiError, Detail
from specs import openapi_document

__all__ = ["null_fields", "parse_body", "path_param", "read_json_body", "validate_strict"]

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


@functools.cache
def _nullable() -> dict[str, frozenset[str]]:
    """Per schema of the document, the properties that allow `null` (`type` naming
    'null', or a `oneOf`/`anyOf` branch that is null). The generated models type every
    optional field `X | None`, so this, not the model, says where null is allowed."""
    schemas = yaml.safe_load(openapi_document())["components"]["schemas"]
    table: dict[str, frozenset[str]] = {}
    for name, schema in schemas.items():
        properties = schema.get("properties") or {}
        table[name] = frozenset(p for p, s in properties.items() if _allows_null(s))
    return table


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in schema.get("enum", ()):
        return True
    branches = [*schema.get("oneOf", ()), *schema.get("anyOf", ())]
    return any(isinstance(b, dict) and _allows_null(b) for b in branches)


def null_fields(value: pydantic.BaseModel, prefix: str = "") -> list[str]:
    """Fields given as `null` where the document does not allow null, as dotted paths,
    in `value` and the models inside it. A model the document does not name (none of
    the request models) is not checked."""
    allowed = _nullable().get(type(value).__name__)
    found: list[str] = []
    fields = type(value).model_fields
    for name in value.model_fields_set:
        field = fields.get(name)
        if field is None:
            continue  # an extra field (`additionalProperties: true`): any value
        wire = field.alias or name
        item = getattr(value, name)
        if item is None and allowed is not None and wire not in allowed:
            found.append(prefix + wire)
        found.extend(_nested_nulls(item, prefix + wire + "."))
    return found


def _nested_nulls(item: Any, prefix: str) -> list[str]:
    if isinstance(item, pydantic.RootModel):
        return _nested_nulls(item.root, prefix)
    if isinstance(item, pydantic.BaseModel):
        return null_fields(item, prefix)
    if isinstance(item, list | tuple):
        found: list[str] = []
        for index, element in enumerate(item):
            found.extend(_nested_nulls(element, f"{prefix}{index}."))
        return found
    return []


def parse_body(model: type[ModelT], raw: bytes, what: str = "body") -> ModelT:
    """`model` from the request body, strictly (`validate_strict`) and with no `null`
    where the document allows none; else ApiError INVALID_PARAMS naming the fields."""
    try:
        value = validate_strict(model, raw)
    except pydantic.ValidationError as exc:
        details = [
            Detail(error["msg"], field=".".join(str(p) for p in error["loc"]) or "body")
            for error in exc.errors(include_input=False, include_url=False)[:32]
        ]
        summary = "; ".join(f"{d.field}: {d.reason}" for d in details[:4])
        raise ApiError("INVALID_PARAMS", f"invalid {what}: {summary}", details=details) from None
    nulls = null_fields(value)
    if nulls:
        details = [Detail("must not be null; leave it out for the default", field=f) for f in nulls]
        summary = ", ".join(nulls[:4])
        raise ApiError(
            "INVALID_PARAMS", f"invalid {what}: null is not allowed for {summary}", details=details
        )
    return value


def path_param(request: Request, name: str, max_length: int) -> str:
    """A path parameter of 1 to `max_length` characters, as the document bounds it;
    else ApiError INVALID_PARAMS (never a 404 or 204 for an id no one could have)."""
    value = str(request.path_params[name])
    if not 1 <= len(value) <= max_length:
        raise ApiError(
            "INVALID_PARAMS",
            f"{name} must be 1-{max_length} characters",
            details=[Detail(f"longer than {max_length} characters", field=name)],
        )
    return value


def query_integer(text: str) -> int | None:
    """An integer query value; an integral number such as `8.0` is one too, as in bodies
    (`http.body.validate_strict`) and as JSON Schema says."""
    if re.fullmatch(r"-?[0-9]{1,18}(\.0*)?", text) is None:
        return None
    return int(text.split(".")[0])
