"""Errors of orchestratord.

    OrchestratorError
    └── ApiError              a request is refused; carries the API-07 envelope fields
                              (`code`, HTTP `status`, `retriable`, `retry_after_ms`, ...)

Expected outcomes inside the core (a queue decision, an unplaceable job) are values,
not exceptions; `ApiError` is raised only at the service boundary and rendered once by
`http.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["STATUS_BY_CODE", "ApiError", "Detail", "OrchestratorError"]

STATUS_BY_CODE: dict[str, int] = {
    "INVALID_PARAMS": 400,
    "CONTEXT_OVERFLOW": 400,
    "UNSUPPORTED_PARAM": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "MODEL_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "IDEMPOTENCY_CONFLICT": 409,  # 422 for an Idempotency-Key reused with another request
    "RELOAD_FAILED": 422,
    "ADMISSION_REJECT": 429,
    "QUEUE_FULL_DROP_LRU": 429,
    "QUOTA_EXCEEDED": 429,
    "INTERNAL": 500,
    "NO_CAPACITY": 503,
    "POOL_UNREADY": 503,
    "SHUTTING_DOWN": 503,
    # Mid-stream codes, when they must become a status (non-streamed OpenAI responses):
    "CANCELLED": 409,
    "WORKER_RESET": 502,
    "ORCHESTRATOR_RESTART": 503,
    "ENGINE_ERROR": 502,
    "DECODE_TIMEOUT": 504,
    "SCHEMA_VIOLATION": 422,  # the output does not satisfy the request's json_schema
}


class OrchestratorError(Exception):
    """Root of orchestratord's errors."""


@dataclass(frozen=True, slots=True)
class Detail:
    reason: str
    field: str | None = None
    pool_id: str | None = None
    check: str | None = None
    wanted: str | None = None
    available: str | None = None


class ApiError(OrchestratorError):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retriable: bool = False,
        retry_after_ms: int | None = None,
        policy_label: str | None = None,
        pool_id: str | None = None,
        details: Sequence[Detail] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE.get(code, 500)
        self.retriable = retriable
        self.retry_after_ms = retry_after_ms
        self.policy_label = policy_label
        self.pool_id = pool_id
        self.details = tuple(details)
