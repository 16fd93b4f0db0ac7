"""What the journal writes and reads back: the records of one batch (a commit), and a
job's row as the store keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestratord.events import TOKEN_RUN

__all__ = [
    "Accepted",
    "Event",
    "EventSpan",
    "IdempotencyRecord",
    "JournaledTask",
    "Located",
    "StateChange",
    "WriteBatch",
    "expand",
    "last_id",
]

Event = tuple[int, str, str]  # (id, name, data) of one SSE event


def expand(events: Sequence[Event]) -> list[Event]:
    """The events of `events`, runs of tokens taken apart."""
    out: list[Event] = []
    for event in events:
        if event[1] != TOKEN_RUN:
            out.append(event)
            continue
        first = event[0]
        out.extend((first + k, "token", data) for k, data in enumerate(event[2].split("\n")))
    return out


def last_id(event: Event) -> int:
    """The id of the last event of `event` (a run's, or its own)."""
    if event[1] != TOKEN_RUN:
        return event[0]
    return event[0] + event[2].count("\n")


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    scope: str  # the client's key name and its Idempotency-Key
    digest: str  # of the route and the request body
    task_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Accepted:
    task_id: str
    wire: str  # the request as `TaskRequest` JSON
    route: str  # v2, v2-stream, chat, completion, embedding
    api_key: str | None  # the key's name, never the key
    correlation_id: str
    detached: bool
    created_ms: int
    idempotency: IdempotencyRecord | None


@dataclass(frozen=True, slots=True)
class StateChange:
    task_id: str
    state: str
    attempts: int
    pool_id: str | None
    started_ms: int | None = None
    finished_ms: int | None = None
    error: str | None = None  # TaskError JSON
    end_json: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None


@dataclass(slots=True)
class WriteBatch:
    accepted: list[Accepted]
    events: list[tuple[str, Sequence[Event]]]
    changes: list[StateChange]

    def __bool__(self) -> bool:
        return bool(self.accepted or self.events or self.changes)


@dataclass(frozen=True, slots=True)
class JournaledTask:
    seq: int
    task_id: str
    wire: str
    route: str
    api_key: str | None
    correlation_id: str
    detached: bool
    state: str
    attempts: int
    pool_id: str | None
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    error: str | None
    end_json: str | None
    tokens_in: int
    tokens_out: int
    finish_reason: str | None
    last_event_id: int  # -1 when none


@dataclass(frozen=True, slots=True)
class Located:
    """A batch and where the journal's log holds it (its events are read from there)."""

    batch: WriteBatch
    log_file: int
    offset: int


@dataclass(frozen=True, slots=True)
class EventSpan:
    """Events `first_id..last_id` of a job, in the batch at `log_file`/`offset`."""

    first_id: int
    last_id: int
    log_file: int
    offset: int
