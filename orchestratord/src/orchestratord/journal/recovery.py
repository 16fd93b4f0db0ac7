"""After a restart: what becomes of each job the journal left unfinished, and how an
ended job is read back from the journal (REL-03).

`plan` is pure. A job the journal knows only as queued has shown no client a token (an
attempt's first event waits for its start to be journaled), so it is queued again, in
the order of acceptance. A job the journal knows as running may have streamed tokens the
journal had not caught: it ends `ORCHESTRATOR_RESTART`, retriable, with its terminal
event numbered past any id a client can have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestratord.events import EventLog
from orchestratord.journal.records import Event, JournaledTask
from orchestratord.journal.writer import EVENT_ID_GAP
from orchestratord.tasks import TaskError, TaskRecord, TaskSpec

__all__ = ["EndRestarted", "Requeue", "ended_record", "plan", "restart_error"]


@dataclass(frozen=True, slots=True)
class Requeue:
    next_event_id: int


@dataclass(frozen=True, slots=True)
class EndRestarted:
    next_event_id: int


def plan(row: JournaledTask) -> Requeue | EndRestarted:
    if row.state == "queued":
        return Requeue(row.last_event_id + 1)
    return EndRestarted(row.last_event_id + EVENT_ID_GAP)


def restart_error(row: JournaledTask) -> TaskError:
    where = f" on pool {row.pool_id}" if row.pool_id else ""
    return TaskError(
        "ORCHESTRATOR_RESTART",
        f"the orchestrator restarted while attempt {row.attempts} of this job ran{where}; "
        "submit it again",
        True,
    )


def _error(raw: str | None) -> TaskError | None:
    if raw is None:
        return None
    body = json.loads(raw)
    return TaskError(
        str(body["code"]),
        str(body["message"]),
        bool(body["retriable"]),
        body.get("retry_after_ms"),
    )


def ended_record(row: JournaledTask, spec: TaskSpec, events: list[Event]) -> TaskRecord:
    """A job that ended, as the journal kept it (for reads after it left memory)."""
    log = EventLog.restored(max(1, len(events)), events, row.last_event_id + 1)
    record = TaskRecord(spec, log, row.created_ms, 0.0)
    record.state = row.state  # type: ignore[assignment]
    record.attempts = row.attempts
    record.pool_id = row.pool_id
    record.started_at_ms = row.started_ms
    record.finished_at_ms = row.finished_ms
    record.error = _error(row.error)
    record.end_json = row.end_json or "{}"
    record.tokens_in = row.tokens_in
    record.tokens_out = row.tokens_out
    record.finish_reason = row.finish_reason
    record.detached = row.detached
    record.journaled = True
    record.published = True  # the journal holds its end
    return record
