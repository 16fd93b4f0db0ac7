"""Reading request bodies: JSON content type required, size capped (SEC-03)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from orchestratord.errors import ApiError

__all__ = ["read_json_body"]


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
