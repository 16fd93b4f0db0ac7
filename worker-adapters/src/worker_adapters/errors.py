"""Errors of worker-adapters, for calls that are not streams (health, props, tokenize,
embed). Streams never raise for engine failures: they end with a `Failed` event.

    AdapterError
    ├── EngineUnavailable     the engine cannot be reached or is gone (retryable: another
    │   │                     replica, or the same one after its restart, may answer)
    │   └── StreamBroken      the connection dropped after the request was sent (reset,
    │                         EOF mid-body): the engine may have died mid-answer
    ├── EngineTimeout         the engine did not answer in time (retryable)
    ├── EngineStatusError     an HTTP engine answered with an error status; carries the
    │                         status, the engine's error type and message (retryable for
    │                         429 and 503); HTTP adapters turn it into `Failed` or
    │                         `RequestRejected` through `worker_adapters.http_errors`
    └── RequestRejected       the engine refused this request (fatal for the request);
                              `code` is the API-07 code to surface

Foreign exceptions (grpc, aiohttp) are mapped to these once, at the adapter edge
(`native.adapter` for gRPC, `_http` for HTTP), and chained. Messages never carry
secrets: HTTP messages pass through `_http.redact` first.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "EngineStatusError",
    "EngineTimeout",
    "EngineUnavailable",
    "RequestRejected",
    "StreamBroken",
]


class AdapterError(Exception):
    """Root of adapter errors. `retriable` says whether trying again may succeed."""

    retriable = False


class EngineUnavailable(AdapterError):
    retriable = True


class StreamBroken(EngineUnavailable):
    """The connection failed after the request went out (reset, or EOF inside the body)."""


class EngineTimeout(AdapterError):
    retriable = True


class EngineStatusError(AdapterError):
    """An HTTP error status from the engine. `error_type` and `message` come from its body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"engine answered HTTP {status} ({error_type or 'no type'}): {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retriable = status in (429, 503)


class RequestRejected(AdapterError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
