"""Errors of worker-adapters, for calls that are not streams (health, props, tokenize,
embed). Streams never raise for engine failures: they end with a `Failed` event.

    AdapterError
    ├── EngineUnavailable     the engine cannot be reached or is gone (retryable: another
    │                         replica, or the same one after its restart, may answer)
    ├── EngineTimeout         the engine did not answer in time (retryable)
    └── RequestRejected       the engine refused this request (fatal for the request);
                              `code` is the API-07 code to surface

Foreign exceptions (grpc, aiohttp, httpx) are mapped to these once, at the adapter edge,
and chained.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Root of adapter errors. `retriable` says whether trying again may succeed."""

    retriable = False


class EngineUnavailable(AdapterError):
    retriable = True


class EngineTimeout(AdapterError):
    retriable = True


class RequestRejected(AdapterError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
