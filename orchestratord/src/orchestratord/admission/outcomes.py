"""What becomes of a task after an attempt, a wait or a silence (pure; REL-02, ADM-06).

No I/O, no clock: callers pass what they measured. `settle` turns the end of one attempt
into `Complete`, `Requeue` (before the first token, bounded by `max_attempts`, with an
exponential back-off) or `Fail`; `queue_expiry` says when a waiting task has waited too
long; `running_expiry` when a running one passed its deadline or went silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker_adapters import End, Failed, StreamEvent

from orchestratord.tasks import TaskError

__all__ = [
    "AttemptLimits",
    "Complete",
    "Fail",
    "Requeue",
    "Settlement",
    "queue_expiry",
    "running_expiry",
    "settle",
]


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    max_attempts: int
    requeue_backoff_ms: int


@dataclass(frozen=True, slots=True)
class Complete:
    end: End


@dataclass(frozen=True, slots=True)
class Requeue:
    failure: Failed
    backoff_s: float
    suspect: bool  # the engine itself was lost: its replica is suspect


@dataclass(frozen=True, slots=True)
class Fail:
    error: TaskError
    suspect: bool


Settlement = Complete | Requeue | Fail


def _stream_cut(token_events: int) -> Failed:
    return Failed(
        "WORKER_RESET",
        "engine stream ended without a terminal event",
        True,
        token_events == 0,
        engine_lost=True,
    )


def settle(
    outcome: StreamEvent | None, *, token_events: int, attempts: int, limits: AttemptLimits
) -> Settlement:
    """The end of attempt number `attempts` of a task that published `token_events`
    tokens. A stream that ended without a terminal event counts as a lost engine."""
    if isinstance(outcome, End):
        return Complete(outcome)
    failure = outcome if isinstance(outcome, Failed) else _stream_cut(token_events)
    may_retry = failure.retriable and failure.before_first_token and token_events == 0
    if may_retry and attempts < limits.max_attempts:
        backoff_s = limits.requeue_backoff_ms / 1000.0 * (2 ** (attempts - 1))
        return Requeue(failure, backoff_s, failure.engine_lost)
    error = TaskError(failure.code, failure.message, failure.retriable)
    return Fail(error, failure.engine_lost)


def queue_expiry(waited_ms: float, max_queue_wait_ms: int, deadline_ms: int | None) -> int | None:
    """The limit a waiting task passed (its deadline or the queue's), or None."""
    limit = max_queue_wait_ms if deadline_ms is None else min(max_queue_wait_ms, deadline_ms)
    return limit if waited_ms > limit else None


def running_expiry(
    age_ms: float, silent_ms: float, deadline_ms: int | None, idle_timeout_ms: int
) -> str | None:
    """Why a running task must end (past its deadline, or no token for too long), or None."""
    if deadline_ms is not None and age_ms > deadline_ms:
        return f"the task passed its deadline of {deadline_ms} ms"
    if silent_ms > idle_timeout_ms:
        return f"no token for {idle_timeout_ms} ms"
    return None
