"""The ledger: the one place a task ends (REL-01).

`finish` puts a task in its terminal state exactly once (the record refuses a second
one; the journal's row takes only the first end too), journals it (the terminal event
is published once the journal holds the end), and does the bookkeeping of that end:
metrics, the client's quota, the trace, the narration line, and moving the record to
the finished set when no attempt still runs.
`complete` is the successful end: its usage and timings, and what the pool's
measurements and the task's session learn from it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from worker_adapters import End

from orchestratord.journal.writer import Journal
from orchestratord.metrics import Metrics
from orchestratord.quotas import Quotas
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionStore
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskError, TaskRecord, TaskState, TaskTable

__all__ = ["Ledger", "task_fields", "wall_ms"]

log = logging.getLogger("orchestratord.core")
_EWMA_WEIGHT = 0.2


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def task_fields(record: TaskRecord, action: str) -> dict[str, object]:
    """Narration fields (OBS-02) for a line about this task."""
    return {
        "action": action,
        "target": record.task_id,
        "task_id": record.task_id,
        "correlation_id": record.spec.correlation_id,
        "pool_id": record.pool_id,
        "session_id": record.spec.session_id,
        "trace_id": record.trace.trace_id if record.trace is not None else None,
    }


class Ledger:
    def __init__(
        self,
        tasks: TaskTable,
        *,
        metrics: Metrics,
        quotas: Quotas,
        stats: StatsBook,
        sessions: SessionStore,
        registry: PoolRegistry,
        journal: Journal | None,
        clock: Callable[[], float],
    ) -> None:
        self.tasks = tasks
        self._journal = journal
        self._metrics = metrics
        self._quotas = quotas
        self._stats = stats
        self._sessions = sessions
        self._registry = registry
        self._clock = clock
        self.job_ms: dict[str, float] = {}  # per model: how long a job takes (EWMA)

    def finish(
        self,
        record: TaskRecord,
        state: TaskState,
        *,
        error: TaskError | None = None,
        end_json: str | None = None,
    ) -> None:
        journal = self._journal if record.journaled else None
        if not record.finish(
            state, wall_ms(), error=error, end_json=end_json, publish=journal is None
        ):
            return
        if journal is not None:  # the end is published once the journal holds it
            journal.finished(record, record.publish_terminal)
        self._metrics.finished.labels(state).inc()
        if record.runner is None:
            self.tasks.retire(record)
        if record.spec.api_key is not None:
            self._quotas.finished(
                record.spec.api_key, self._clock(), record.tokens_in + record.tokens_out
            )
        if record.trace is not None:
            first = record.first_token_mono
            pool_id = record.pool_id
            record.trace.end(
                state,
                error.code if error else None,
                (record.tokens_in, record.tokens_out),
                self._clock() - first if first is not None else None,
                model_id=self.model_label(record.spec.model, pool_id) if pool_id else None,
                finish_reason=record.finish_reason if state == "completed" else None,
            )
        log.info(
            "ends the stream of task %s: %s%s",
            record.task_id,
            state,
            f" ({error.code}: {error.message})" if error else "",
            extra=task_fields(record, "stream.end"),
        )

    def complete(self, record: TaskRecord, end: End, attempt_started: float) -> None:
        now = self._clock()
        record.tokens_in = end.tokens_in or record.tokens_in
        record.tokens_out = end.tokens_out
        record.finish_reason = "stop" if end.finish_reason == "stop" else "length"
        first = record.first_token_mono
        record.decode_time_ms = (now - first) * 1000.0 if first is not None else 0.0
        record.ttft_ms = (
            record.ttft_ms if record.ttft_ms is not None else (now - record.created_mono) * 1000.0
        )
        body = {
            "tokens_in": record.tokens_in,
            "tokens_out": record.tokens_out,
            "decode_time_ms": round(record.decode_time_ms, 3),
            "ttft_ms": round(record.ttft_ms, 3),
            "finish_reason": record.finish_reason,
        }
        self.finish(record, "completed", end_json=json.dumps(body))
        self._metrics.tokens_in.inc(record.tokens_in)
        self._metrics.tokens_out.inc(record.tokens_out)
        if record.pool_id is not None:
            self._metrics.completed(
                self.model_label(record.spec.model, record.pool_id),
                record.pool_id,
                ttft_s=record.ttft_ms / 1000.0,
                decode_s=record.decode_time_ms / 1000.0,
                end_to_end_s=now - record.created_mono,
                tokens_out=record.tokens_out,
            )
        self._learn(record, attempt_started, now)
        elapsed_ms = (now - attempt_started) * 1000.0
        previous = self.job_ms.get(record.spec.model)
        self.job_ms[record.spec.model] = (
            elapsed_ms if previous is None else previous + _EWMA_WEIGHT * (elapsed_ms - previous)
        )

    def model_label(self, requested: str, pool_id: str) -> str:
        """The `model` label of a task's series: its pool's model id (an alias the client
        used would split one model's series), or the name it asked for."""
        pool = self._registry.pool(pool_id)
        return pool.model_id if pool is not None else requested

    def _learn(self, record: TaskRecord, attempt_started: float, now: float) -> None:
        """Feed the completed turn to the pool's measurements and the task's session."""
        pool_id, replica = record.pool_id, record.replica
        if pool_id is None or replica is None:
            return
        first = record.first_token_mono or now
        self._stats.pool(pool_id).observe(
            prefill_tokens=record.tokens_in * (1.0 - record.prefix_cached_share),
            tokens_out=record.tokens_out,
            prefill_s=first - attempt_started,
            decode_s=now - first,
        )
        if record.spec.session_id is not None:
            info = self._registry.replica(pool_id, replica)
            self._sessions.record_turn(
                record.spec.api_key,
                record.spec.session_id,
                now,
                pool_id=pool_id,
                replica=replica,
                incarnation=info.incarnation if info else 0,
                tokens=record.tokens_out,
                time_ms=record.decode_time_ms or 0.0,
            )
