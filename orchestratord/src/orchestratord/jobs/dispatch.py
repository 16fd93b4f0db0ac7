"""The dispatcher: the one loop that places waiting work, and what follows an attempt.

It wakes when a task is queued behind others, a slot is released, the registry changes
or a retry's back-off ends, and places every waiting task it can on a frozen snapshot of
the pools (placements within one cycle see each other through `assume`). A task that
arrives to an empty queue runs the same cycle at once, in the submitter's task. Each
placement starts an `Attempt`; the attempt returns how it ended and `admission.outcomes`
decides what follows: completed, re-queued at the head of its lane (before the first
token, bounded by `max_attempts`, the replica marked suspect when the engine itself was
lost) or failed. The lease loop expires hosts, sessions and silent tasks (ADM-06); when
a host is lost its running attempts are abandoned at once (`host_lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from adapter_host import AdapterHost
from worker_adapters import StreamEvent
from worker_adapters.errors import AdapterError

from orchestratord.admission import TaskQueue
from orchestratord.admission.outcomes import (
    AttemptLimits,
    Complete,
    Requeue,
    queue_expiry,
    running_expiry,
    settle,
)
from orchestratord.config import OrchestratorConfig
from orchestratord.eager import start_eagerly
from orchestratord.jobs.attempt import Attempt
from orchestratord.jobs.ledger import Ledger, task_fields, wall_ms
from orchestratord.journal.writer import Journal
from orchestratord.metrics import Metrics
from orchestratord.placement import CycleViews, JobNeeds, Placed, PoolView, Unplaceable, place
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionStore
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskError, TaskRecord, TaskTable

__all__ = ["Dispatcher"]

log = logging.getLogger("orchestratord.core")


class Dispatcher:
    def __init__(
        self,
        config: OrchestratorConfig,
        *,
        queue: TaskQueue,
        tasks: TaskTable,
        ledger: Ledger,
        attempt: Attempt,
        registry: PoolRegistry,
        host: AdapterHost,
        sessions: SessionStore,
        stats: StatsBook,
        metrics: Metrics,
        journal: Journal | None,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._journal = journal
        self._queue = queue
        self._tasks = tasks
        self._ledger = ledger
        self._attempt = attempt
        self._registry = registry
        self._host = host
        self._sessions = sessions
        self._stats = stats
        self._metrics = metrics
        self._clock = clock
        self._limits = AttemptLimits(config.max_attempts, config.requeue_backoff_ms)
        self._retry_after_ms = config.queue_limits().retry_after_ms
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.paused = False  # shutting down: no new attempt; queued jobs wait for the next start

    # -- the loop ------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The dispatcher loop and the lease loop; runs until cancelled."""
        lease = asyncio.create_task(self._lease_loop())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self.cycle()
        finally:
            lease.cancel()

    async def _lease_loop(self) -> None:
        period = self._config.heartbeat_interval_ms / 2000.0
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            self._registry.expire(now)
            self._sessions.sweep(now)
            self._watchdog(now)
            self.wake()

    def _watchdog(self, now: float) -> None:
        """ADM-06: end running tasks past their deadline or silent for `idle_timeout_ms`."""
        for record in self._tasks.live():
            if record.state != "running":
                continue
            reason = running_expiry(
                (now - record.created_mono) * 1000.0,
                (now - record.last_activity_mono) * 1000.0,
                record.spec.deadline_ms,
                self._config.idle_timeout_ms,
            )
            if reason is None:
                continue
            self._ledger.finish(record, "failed", error=TaskError("DECODE_TIMEOUT", reason, True))
            if record.runner is not None:
                self.spawn(self.stop_engine(record.engine_job_id, record.runner))
            log.warning(
                "ends task %s: %s", record.task_id, reason, extra=task_fields(record, "watchdog")
            )

    def views(self, now: float) -> tuple[PoolView, ...]:
        """The registry's pools with what the orchestrator measured of them (rates and
        prompt-prefix index); with `routing: least_loaded`, without: every pool is then
        predicted alike and free slots decide."""
        if self._config.routing == "least_loaded":
            return tuple(self._registry.views(now))
        views = []
        for view in self._registry.views(now):
            stats = self._stats.known(view.pool_id)
            if stats is not None:
                view = replace(
                    view,
                    decode_tokens_per_s=stats.decode_tokens_per_s,
                    prefill_tokens_per_s=stats.prefill_tokens_per_s,
                    prefix_keys=stats.prefixes.keys(),  # no copy per cycle
                )
            views.append(view)
        return tuple(views)

    def _needs(self, record: TaskRecord, now: float) -> JobNeeds:
        """The task's needs, with the pool its session is warm on (if it still is)."""
        needs = record.spec.needs
        session_id = record.spec.session_id
        session = (
            self._sessions.get(record.spec.api_key, session_id, now)
            if session_id is not None
            else None
        )
        if session is None or session.pool_id is None or session.replica is None:
            return needs
        replica = self._registry.replica(session.pool_id, session.replica)
        if replica is None or replica.incarnation != session.incarnation:
            return needs
        return replace(needs, session_pool=session.pool_id)

    def cycle(self, views: tuple[PoolView, ...] | None = None) -> None:
        """Place every waiting task it can; `views`: this instant's pools, if taken."""
        if self.paused:
            return
        now = self._clock()
        pools = CycleViews(views if views is not None else self.views(now))
        blocked: set[JobNeeds] = set()  # needs without prefix keys: those only score
        next_retry: float | None = None
        for task_id in list(self._queue):
            record = self._tasks.get(task_id)
            if record is None or record.done:
                self._queue.remove(task_id)
                continue
            if self._expired(record, now):
                continue
            if record.not_before > now:
                next_retry = min(next_retry or record.not_before, record.not_before)
                continue
            if pools.free_slots <= 0:
                continue  # nothing can be placed this cycle; deadlines are still checked
            needs = self._needs(record, now)
            feasibility = replace(needs, prefix_keys=())
            if feasibility in blocked:
                continue
            decision = place(needs, pools.candidates(needs.model))
            if isinstance(decision, Unplaceable):
                outcome = "waiting" if decision.transient else "unplaceable"
                self._metrics.placements.labels(outcome).inc()
                blocked.add(feasibility)
                continue
            self._metrics.placements.labels("placed").inc()
            pools.take(decision)
            self._start(record, decision)
        if next_retry is not None:
            self._schedule_wake(next_retry - now)

    def _expired(self, record: TaskRecord, now: float) -> bool:
        limit = queue_expiry(
            (now - record.created_mono) * 1000.0,
            self._config.max_queue_wait_ms,
            record.spec.deadline_ms,
        )
        if limit is None:
            return False
        self._queue.remove(record.task_id)
        error = TaskError(
            "NO_CAPACITY",
            f"no pool could take the task within {limit} ms",
            True,
            self._retry_after_ms,
        )
        self._ledger.finish(record, "failed", error=error)
        return True

    def _schedule_wake(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), self.wake)

    # -- attempts ------------------------------------------------------------------------

    def _start(self, record: TaskRecord, placed: Placed) -> None:
        self._queue.remove(record.task_id)
        self._registry.reserve(placed.pool_id, placed.replica)
        record.state = "running"
        record.last_activity_mono = self._clock()
        record.attempts += 1
        record.pool_id, record.replica = placed.pool_id, placed.replica
        if record.attempts == 1:
            model = self._ledger.model_label(record.spec.model, placed.pool_id)
            self._metrics.placed(model, placed.pool_id, self._clock() - record.created_mono)
        record.engine_job_id = f"{record.task_id}.{record.attempts}"
        if record.started_at_ms is None:
            record.started_at_ms = wall_ms()
        if self._journal is not None and record.journaled:
            self._journal.running(record)  # the attempt's first event waits for it
        log.info(
            "places task %s on pool %s replica %d (attempt %d)",
            record.task_id,
            placed.pool_id,
            placed.replica,
            record.attempts,
            extra=task_fields(record, "place"),
        )
        trace = record.trace
        context = trace.placed(placed.pool_id, placed.replica, record.attempts) if trace else None
        # Eagerly: the attempt writes its engine request now, not behind every callback
        # and task already ready (a burst of new requests' intake, at c=32: eager.py).
        start_eagerly(self._run(record, placed), context=context)

    async def _run(self, record: TaskRecord, placed: Placed) -> None:
        record.runner = asyncio.current_task()  # set in `_start`'s step (eager)
        attempt_started = self._clock()
        outcome: StreamEvent | None = None
        try:
            outcome = await self._attempt.run(record, placed)
        finally:
            self._registry.release(placed.pool_id, placed.replica)
            record.runner = None
        if record.trace is not None:
            record.trace.attempt_ended(outcome)
        if not record.done:
            self._settle(record, placed, outcome, attempt_started)
        self._tasks.retire(record)

    def _settle(
        self,
        record: TaskRecord,
        placed: Placed,
        outcome: StreamEvent | None,
        attempt_started: float,
    ) -> None:
        settlement = settle(
            outcome, token_events=record.token_events, attempts=record.attempts, limits=self._limits
        )
        if isinstance(settlement, Complete):
            self._ledger.complete(record, settlement.end, attempt_started)
            return
        if settlement.suspect:
            self._registry.mark_suspect(placed.pool_id, placed.replica, self._clock())
        if isinstance(settlement, Requeue):
            self._requeue(record, settlement)
            return
        self._ledger.finish(record, "failed", error=settlement.error)

    def _requeue(self, record: TaskRecord, requeue: Requeue) -> None:
        record.state = "queued"
        record.pool_id = record.replica = None
        record.not_before = self._clock() + requeue.backoff_s
        self._queue.push(record.task_id, record.spec.priority, front=True)
        if self._journal is not None and record.journaled:
            self._journal.requeued(record)
        log.warning(
            "re-queues task %s: %s before its first token (%s)",
            record.task_id,
            requeue.failure.code,
            requeue.failure.message,
            extra=task_fields(record, "requeue"),
        )
        self._schedule_wake(requeue.backoff_s)

    # -- ends from outside an attempt ----------------------------------------------------

    def cancel(self, record: TaskRecord, error: TaskError) -> None:
        """End a live task now; after return no further token is delivered."""
        self.cancel_with(record, error, "cancelled")

    def cancel_with(self, record: TaskRecord, error: TaskError, state: str = "failed") -> None:
        """End a live task now in `state` with `error`, stopping its engine job."""
        self._queue.remove(record.task_id)
        self._ledger.finish(record, state, error=error)  # type: ignore[arg-type]
        runner = record.runner
        if runner is not None:
            self.spawn(self.stop_engine(record.engine_job_id, runner))

    def host_lost(self, host_id: str, reason: str) -> None:
        """A host left the view (control stream closed, lease expired): attempts running
        on its pools are abandoned at once, not left to the idle watchdog. One that has
        streamed nothing is re-queued for other hosts; one that has ends with a
        retriable `WORKER_RESET`. Its engine is not told: it may be unreachable; a
        partition that heals finds the stream gone."""
        for record in self._tasks.live():
            runner, pool_id = record.runner, record.pool_id
            if record.state != "running" or runner is None or pool_id is None:
                continue
            pool = self._registry.pool(pool_id)
            if pool is None or pool.host_id != host_id:
                continue
            record.abandoned = f"host {host_id} lost: {reason}"
            runner.cancel()
            log.warning(
                "abandons task %s on pool %s: host %s lost (%s)",
                record.task_id,
                pool_id,
                host_id,
                reason,
                extra=task_fields(record, "host.lost"),
            )

    async def stop_engine(self, engine_job_id: str, runner: asyncio.Task[None]) -> None:
        with contextlib.suppress(AdapterError):
            await self._host.cancel(engine_job_id)
        runner.cancel()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop every running attempt and background task (after the tasks ended)."""
        runners = [r.runner for r in self._tasks.live() if r.runner is not None]
        for task in [*runners, *self._background]:
            task.cancel()
        await asyncio.gather(*runners, *self._background, return_exceptions=True)
