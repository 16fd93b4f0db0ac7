"""Rendering errors: the one envelope of API-07, with `Retry-After` on 429 and 503."""

from __future__ import annotations

import json
import math

from starlette.responses import Response

from orchestratord.errors import ApiError

__all__ = ["error_response"]


def error_response(error: ApiError, correlation_id: str) -> Response:
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
    headers = {}
    if error.status in (429, 503):
        seconds = math.ceil((error.retry_after_ms or 1000) / 1000)
        headers["Retry-After"] = str(max(1, seconds))
    return Response(
        json.dumps(body), status_code=error.status, headers=headers, media_type="application/json"
    )
