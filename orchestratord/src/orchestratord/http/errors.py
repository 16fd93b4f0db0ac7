"""Rendering errors, once for every layer: llorch's envelope (API-07) on `/v2` and the
ops endpoints, OpenAI's error body on the OpenAI facade (`/v1/...`, API-13), whichever
layer refused the request (correlation id, authentication, routing, the handler, the
read deadline). `Retry-After` on 429 and 503 in both shapes.

OpenAI's body is `{"error": {"message", "type", "param", "code"}}`: `type` is OpenAI's
class of error for the status (`OPENAI_ERROR_TYPES`), `param` the first field a detail
names, `code` llorch's error code (so a client can tell `ADMISSION_REJECT` from
`QUOTA_EXCEEDED`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from starlette.responses import Response

from orchestratord.errors import ApiError

__all__ = [
    "OPENAI_ERROR_TYPES",
    "envelope",
    "error_body",
    "error_headers",
    "error_response",
    "is_openai_path",
    "openai_error_body",
    "openai_error_type",
]

OPENAI_PREFIX = "/v1/"
# OpenAI's error `type` by HTTP status; any other status is `server_error` (5xx) or
# `invalid_request_error` (4xx).
OPENAI_ERROR_TYPES: dict[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def is_openai_path(path: str) -> bool:
    """True for the OpenAI facade's paths, whose errors are in OpenAI's shape."""
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def openai_error_type(status: int) -> str:
    if status in OPENAI_ERROR_TYPES:
        return OPENAI_ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error_body(error: ApiError) -> dict[str, object]:
    param = next((d.field for d in error.details if d.field), None)
    return {
        "error": {
            "message": error.message,
            "type": openai_error_type(error.status),
            "param": param,
            "code": error.code,
        }
    }


def envelope(error: ApiError, correlation_id: str) -> dict[str, object]:
    body: dict[str, object] = {
        "code": error.code,
        "message": error.message,
        "retriable": error.retriable,
        "correlation_id": correlation_id,
    }
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
    if error.policy_label is not None:
        body["policy_label"] = error.policy_label
    if error.pool_id is not None:
        body["pool_id"] = error.pool_id
    if error.details:
        body["details"] = [
            {
                k: v
                for k, v in (
                    ("reason", d.reason),
                    ("field", d.field),
                    ("pool_id", d.pool_id),
                    ("check", d.check),
                    ("wanted", d.wanted),
                    ("available", d.available),
                )
                if v is not None
            }
            for d in error.details
        ]
    return body


def error_body(error: ApiError, correlation_id: str, path: str) -> bytes:
    """The error's JSON body in the shape `path` answers in."""
    if is_openai_path(path):
        return json.dumps(openai_error_body(error)).encode()
    return json.dumps(envelope(error, correlation_id)).encode()


def error_headers(error: ApiError) -> dict[str, str]:
    """`Retry-After` (whole seconds, at least 1) on 429 and 503."""
    if error.status not in (429, 503):
        return {}
    seconds = math.ceil((error.retry_after_ms or 1000) / 1000)
    return {"Retry-After": str(max(1, seconds))}


def error_response(
    error: ApiError,
    correlation_id: str,
    path: str = "",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The response for `error` on `path` (OpenAI's shape under `/v1/`, else API-07's),
    with `headers` (e.g. `Allow` on a 405) added."""
    return Response(
        error_body(error, correlation_id, path),
        status_code=error.status,
        headers={**error_headers(error), **(headers or {})},
        media_type="application/json",
    )
