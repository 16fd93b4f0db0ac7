"""How HTTP engine failures become API-07 codes: one table for every HTTP adapter.

Before the stream (an HTTP error status, `EngineStatusError`):

    status          code                                                retriable
    400, 413, 422   CONTEXT_OVERFLOW when the engine says the prompt does   no
                    not fit (llama-server `exceed_context_size_error`,
                    vLLM "maximum context length", TGI "must be <= N"),
                    else INVALID_PARAMS
    401, 403        ENGINE_ERROR: the engine refused the pool's key (our    no
                    configuration, not the client's)
    404             ENGINE_ERROR: route or served model missing             no
    429             NO_CAPACITY: engine full                                yes
    501             INVALID_PARAMS: feature not enabled on this engine      no
    503             POOL_UNREADY: loading, or engine dead                   yes
    other 5xx       ENGINE_ERROR, except a body that reports a request      yes
                    validation failure (llama_cpp.server answers pydantic
                    errors with 500): INVALID_PARAMS, not retriable

Transport: a refused or reset connection is WORKER_RESET with `engine_lost`; a stream
that ends without the engine's terminal marker is WORKER_RESET with `engine_lost` (the
engine, or the path to it, went away mid-answer); a stall is DECODE_TIMEOUT. All
retriable; `before_first_token` decides whether the dispatcher may re-queue (REL-02).
An error frame under HTTP 200 is ENGINE_ERROR (retriable); TGI's typed frames are
refined in `worker_adapters.tgi.wire`.

Output: a finished output that a `json_schema` request's schema refuses (not JSON, cut
by `max_tokens`, or a keyword the engine's grammar did not enforce) is SCHEMA_VIOLATION,
not retriable (the same request would most likely fail again), with the validator's
path and reason (`worker_adapters.constraints.schema_violation`).
"""

from __future__ import annotations

import re

from worker_adapters.errors import (
    AdapterError,
    EngineStatusError,
    EngineTimeout,
    EngineUnavailable,
    RequestRejected,
)
from worker_adapters.types import Failed

__all__ = [
    "control_error",
    "failure_from_status",
    "failure_from_transport",
    "frame_failure",
    "is_context_overflow",
    "truncated",
]

_OVERFLOW = re.compile(
    r"exceed_context_size|context (length|size|window)|"
    r"must be <= \d+|too many tokens|exceeds? the (available )?context",
    re.IGNORECASE,
)
_VALIDATION = re.compile(r"^\d+ validation errors?\b")
_INVALID = frozenset({400, 413, 422})
_OWN_CONFIG = frozenset({401, 403, 404})


def is_context_overflow(error_type: str, message: str) -> bool:
    return bool(_OVERFLOW.search(error_type) or _OVERFLOW.search(message))


def failure_from_status(exc: EngineStatusError) -> Failed:
    """The terminal event for an error status before any stream byte."""
    status, message = exc.status, exc.message or f"HTTP {exc.status}"
    if status in _INVALID:
        code = (
            "CONTEXT_OVERFLOW" if is_context_overflow(exc.error_type, message) else "INVALID_PARAMS"
        )
        return Failed(code, message, False, True)
    if status in _OWN_CONFIG:
        return Failed(
            "ENGINE_ERROR", f"engine refused the request ({status}): {message}", False, True
        )
    if status == 429:
        return Failed("NO_CAPACITY", f"engine overloaded: {message}", True, True)
    if status == 501:
        return Failed("INVALID_PARAMS", f"engine does not support this: {message}", False, True)
    if status >= 500 and _VALIDATION.match(message):
        return Failed("INVALID_PARAMS", message, False, True)
    if status == 503:
        return Failed("POOL_UNREADY", f"engine unavailable: {message}", True, True)
    return Failed("ENGINE_ERROR", f"engine error ({status}): {message}", status >= 500, True)


def failure_from_transport(exc: AdapterError, *, tokens_seen: bool) -> Failed:
    """The terminal event for a transport failure (`_http` already mapped the foreign one)."""
    if isinstance(exc, EngineStatusError):
        return failure_from_status(exc)
    if isinstance(exc, EngineTimeout):
        return Failed("DECODE_TIMEOUT", str(exc), True, not tokens_seen)
    if isinstance(exc, EngineUnavailable):
        return Failed("WORKER_RESET", str(exc), True, not tokens_seen, engine_lost=True)
    if isinstance(exc, RequestRejected):
        return Failed(exc.code, str(exc), False, not tokens_seen)
    return Failed("ENGINE_ERROR", str(exc), exc.retriable, not tokens_seen)


def truncated(*, tokens_seen: bool, detail: str = "") -> Failed:
    """The stream ended without the engine's terminal marker (ADP-03)."""
    message = "engine stream ended without its terminal marker"
    return Failed(
        "WORKER_RESET",
        f"{message} ({detail})" if detail else message,
        True,
        not tokens_seen,
        engine_lost=True,
    )


def frame_failure(message: str, *, tokens_seen: bool) -> Failed:
    """An error frame under HTTP 200."""
    return Failed("ENGINE_ERROR", message or "engine reported an error", True, not tokens_seen)


def control_error(exc: EngineStatusError) -> AdapterError:
    """The exception for an error status answering a control call (tokenize, props, ...)."""
    failure = failure_from_status(exc)
    if failure.retriable:
        return EngineUnavailable(failure.message)
    return RequestRejected(failure.code, failure.message)
