"""Tasks: the domain job (`TaskSpec`, immutable) and its live record (`TaskRecord`).

A record moves `queued -> running -> completed | failed | cancelled`, and may go back
from `running` to `queued` when its engine failed before the first token (REL-02).
The record owns the task's `EventLog`; `finish` writes the one terminal event and the
terminal state together, so the two can never disagree.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from worker_adapters import GenerateRequest

from orchestratord.admission import Priority
from orchestratord.events import EventLog
from orchestratord.job_trace import JobTrace
from orchestratord.placement import JobNeeds
from orchestratord.sessions import SessionOptions

__all__ = ["Submission", "TaskError", "TaskRecord", "TaskSpec", "TaskState", "TaskTable"]

TaskState = Literal["queued", "running", "completed", "failed", "cancelled"]
Workload = Literal["completion", "chat", "embedding"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str
    model: str
    workload: Workload
    priority: Priority
    request: GenerateRequest
    needs: JobNeeds
    session_id: str | None
    deadline_ms: int | None
    correlation_id: str
    inputs: tuple[str, ...] = ()
    session_options: SessionOptions | None = None
    api_key: str | None = None  # the name of the client's API key, never the key


@dataclass(frozen=True, slots=True)
class Submission:
    """How a job came in, beside its spec: what the journal keeps to rebuild it (the
    request in wire form and the route it came by), its idempotency, and whether it runs
    on without a reader (`detached`: two-step jobs, or a client that asked, REL-04)."""

    wire: str = ""  # the `TaskRequest` JSON; empty: not journaled (embeddings)
    route: str = "v2"
    idempotency_key: str | None = None
    digest: str = ""  # of the route and the request, for the idempotency check
    detached: bool = False
    client_task_id: bool = False  # the client chose the task id


@dataclass(frozen=True, slots=True)
class TaskError:
    code: str
    message: str
    retriable: bool
    retry_after_ms: int | None = None

    def to_json(self) -> str:
        body: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "retriable": self.retriable,
        }
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        return json.dumps(body)


@dataclass(slots=True, eq=False)
class TaskRecord:
    spec: TaskSpec
    events: EventLog
    created_at_ms: int
    created_mono: float
    state: TaskState = "queued"
    queue_position: int = 0
    predicted_start_ms: int = 0
    pool_id: str | None = None
    replica: int | None = None
    engine_job_id: str = ""
    attempts: int = 0
    not_before: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    token_events: int = 0
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    first_token_mono: float | None = None
    prefix_cached_share: float = 0.0  # of the prompt, by the pool's prefix index (stats)
    ttft_ms: float | None = None
    decode_time_ms: float | None = None
    finish_reason: str | None = None
    error: TaskError | None = None
    embeddings: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    awaiting_load: bool = False
    last_activity_mono: float = 0.0
    runner: asyncio.Task[None] | None = field(default=None, repr=False)
    abandoned: str = ""  # why the orchestrator gave up on the running attempt (host lost)
    trace: JobTrace | None = field(default=None, repr=False)  # only when tracing is on
    end_json: str = "{}"
    journaled: bool = False  # the journal holds this job (its changes go there)
    published: bool = False  # its terminal event is out (after the journal's commit)
    # Two-step jobs (202, then events) run to their end without a reader (REL-04).
    detached: bool = False
    # Set once the journal holds the current attempt: its first event waits for it.
    journaled_running: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")

    @property
    def shown_state(self) -> TaskState:
        """The state clients may see: an end only once its terminal event is out (the
        journal holds it), so no read shows an end that a crash could take back."""
        if not self.done or self.published:
            return self.state
        return "running" if self.started_at_ms is not None else "queued"

    def finish(
        self,
        state: TaskState,
        now_ms: int,
        *,
        error: TaskError | None = None,
        end_json: str | None = None,
        publish: bool = True,
    ) -> bool:
        """Enter a terminal state and write the terminal event; False if already done.
        With `publish=False` the event waits for `publish_terminal` (the journal's
        commit): no client sees an end that a crash could still take back."""
        if self.done:
            return False
        self.state = state
        self.finished_at_ms = now_ms
        self.error = error
        self.end_json = end_json or "{}"
        if publish:
            self.publish_terminal()
        else:
            self.events.held = True  # no event may slip in before the terminal one
        return True

    def terminal_event(self) -> tuple[str, str]:
        """The terminal event's name and data, from the end this record was given."""
        if self.error is not None:
            return "error", self.error.to_json()
        return "end", self.end_json

    def publish_terminal(self) -> None:
        self.published = True
        self.events.held = False
        self.events.append(*self.terminal_event(), journal=False)


class TaskTable:
    """All known tasks: live ones, and the most recent finished ones (bounded)."""

    def __init__(self, finished_kept: int) -> None:
        self._live: dict[str, TaskRecord] = {}
        self._finished: OrderedDict[str, TaskRecord] = OrderedDict()
        self._finished_kept = finished_kept

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live or task_id in self._finished

    def add(self, record: TaskRecord) -> None:
        self._live[record.task_id] = record

    def get(self, task_id: str) -> TaskRecord | None:
        return self._live.get(task_id) or self._finished.get(task_id)

    def retire(self, record: TaskRecord) -> None:
        """Move a finished task out of the live set; the oldest finished ones are forgotten."""
        if self._live.pop(record.task_id, None) is None:
            return
        self._finished[record.task_id] = record
        while len(self._finished) > self._finished_kept:
            self._finished.popitem(last=False)

    def live(self) -> list[TaskRecord]:
        return list(self._live.values())

    def finished(self) -> list[TaskRecord]:
        """The finished tasks still kept, most recent first."""
        return list(reversed(self._finished.values()))
