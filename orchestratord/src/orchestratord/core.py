"""`Orchestrator`: the task life of `orchestratord.jobs`, composed behind one facade.

    submit ─► Intake ─► queue ─► Dispatcher cycle ─► placement (pure)
                                      │ reserve slot (assume)
                                      ▼
                          Attempt: adapter-host submit (bind) ─► events ─► EventLog
                                      │ release slot; outcome ─► admission.outcomes
                                      ▼
              completed | re-queued (before the 1st token) | failed ─► Ledger

With the journal on (the default), every accepted job is written before it is
acknowledged, and `start` recovers what a previous run left unfinished
(`journal.recovery`); `lookup` reads ended jobs back from the journal; `Idempotency-Key`
resubmits find their job (`jobs.idempotency`); `shutdown` (SIGTERM) stops admitting and
lets running jobs finish within the grace, leaving queued ones to the next start.

The HTTP layer, the control link and the deployments speak to this class only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from adapter_host import AdapterHost
from worker_adapters import GenerateRequest, Sampling

from orchestratord.admission import TaskQueue
from orchestratord.catalog import FleetCatalog
from orchestratord.config import OrchestratorConfig
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError
from orchestratord.events import EventLog
from orchestratord.job_trace import JobTrace
from orchestratord.jobs.attempt import Attempt
from orchestratord.jobs.dispatch import Dispatcher
from orchestratord.jobs.idempotency import IdempotencyKeys, key_scope
from orchestratord.jobs.intake import Intake
from orchestratord.jobs.ledger import Ledger, task_fields, wall_ms
from orchestratord.journal import Journal, JournalLog, SqliteJournal
from orchestratord.journal.records import IdempotencyRecord, JournaledTask
from orchestratord.journal.recovery import EndRestarted, ended_record, plan, restart_error
from orchestratord.metrics import Metrics
from orchestratord.placement import JobNeeds, PoolView
from orchestratord.quotas import Quotas
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionOptions, SessionStore
from orchestratord.stats import StatsBook
from orchestratord.tasks import Submission, TaskError, TaskRecord, TaskSpec, TaskTable
from specs import tracing

__all__ = ["Orchestrator", "new_task_id"]

log = logging.getLogger("orchestratord.core")


class Orchestrator:
    def __init__(
        self,
        config: OrchestratorConfig,
        registry: PoolRegistry,
        host: AdapterHost,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.host = host
        self._clock = clock
        queue = TaskQueue()
        self.tasks = TaskTable(config.finished_kept)
        self.sessions = SessionStore(SessionOptions())
        self.stats = StatsBook()
        self.quotas = Quotas(config.api_keys)
        self.catalog = FleetCatalog(registry, Path(config.state_dir) / "catalog.sqlite")
        self.journal: Journal | None = None
        self._restarted = (Path(config.state_dir) / "journal.sqlite").exists()
        if config.journal:
            state_dir = Path(config.state_dir)
            store = SqliteJournal(state_dir / "journal.sqlite", sync=config.journal_sync)
            journal_log = JournalLog(state_dir / "journal-wal", sync=config.journal_sync == "full")
            self.journal = Journal(store, journal_log, flush_ms=config.journal_flush_ms)
        # Rebuilds a journaled job's spec from its wire form (set by the HTTP layer).
        self.rebuild: Callable[[JournaledTask], TaskSpec] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._queue = queue
        self.metrics = Metrics(registry, self.queue_depth)
        self.ledger = Ledger(
            self.tasks,
            metrics=self.metrics,
            quotas=self.quotas,
            stats=self.stats,
            sessions=self.sessions,
            registry=registry,
            journal=self.journal,
            clock=clock,
        )
        attempt = Attempt(host, registry, self.stats, self.metrics, clock)
        self.dispatcher = Dispatcher(
            config,
            queue=queue,
            tasks=self.tasks,
            ledger=self.ledger,
            attempt=attempt,
            registry=registry,
            host=host,
            sessions=self.sessions,
            stats=self.stats,
            metrics=self.metrics,
            journal=self.journal,
            clock=clock,
        )
        self.intake = Intake(
            config,
            queue=queue,
            tasks=self.tasks,
            ledger=self.ledger,
            dispatcher=self.dispatcher,
            registry=registry,
            host=host,
            sessions=self.sessions,
            quotas=self.quotas,
            catalog=self.catalog,
            metrics=self.metrics,
            journal=self.journal,
            clock=clock,
        )
        self.keys = IdempotencyKeys(
            self.journal,
            self.lookup,
            retention_ms=config.journal_retention_s * 1000,
            kept=config.finished_kept,
        )

    @property
    def deployments(self) -> DeploymentManager | None:
        return self.intake.deployments

    @deployments.setter
    def deployments(self, manager: DeploymentManager | None) -> None:
        self.intake.deployments = manager

    def queue_depth(self) -> dict[str, int]:
        return self.intake.queue_depth()

    def queued_for(self, models: frozenset[str]) -> int:
        return self.intake.queued_for(models)

    def views(self, now: float) -> tuple[PoolView, ...]:
        return self.dispatcher.views(now)

    def wake(self) -> None:
        self.dispatcher.wake()

    async def run(self) -> None:
        """The dispatcher loop and the lease loop; runs until cancelled."""
        await self.dispatcher.run()

    async def submit(
        self,
        spec: TaskSpec,
        submission: Submission | None = None,
        *,
        trace_parent: Mapping[str, str] | None = None,
    ) -> TaskRecord:
        """Admit a task or raise ApiError (ADM-01..03). The task is queued (and, with
        the journal on, journaled) on return. A resubmit with a known `Idempotency-Key`
        returns that key's job instead. With tracing on, the job's trace starts here,
        under the client's `trace_parent`."""
        submission = submission or Submission()
        key = submission.idempotency_key
        if key is None:
            return await self._admit(spec, submission, trace_parent, None)
        scope = key_scope(spec.api_key, key)
        existing = await self.keys.existing(scope, submission.digest, wall_ms())
        if existing is not None:
            return existing
        entry = self.keys.reserve(scope, submission.digest, spec.task_id, wall_ms())
        record: TaskRecord | None = None
        try:
            record = await self._admit(
                spec, submission, trace_parent, self.keys.journal_record(scope, entry)
            )
        finally:
            self.keys.admitted(scope, entry, record)
        return record

    async def _admit(
        self,
        spec: TaskSpec,
        submission: Submission,
        trace_parent: Mapping[str, str] | None,
        idempotency: IdempotencyRecord | None,
    ) -> TaskRecord:
        if not tracing.enabled():
            record = await self.intake.admit(spec, None, submission, idempotency)
        else:
            trace = JobTrace(spec, trace_parent)
            try:
                record = await self.intake.admit(spec, trace, submission, idempotency)
            except ApiError as exc:
                trace.rejected(exc.code)
                raise
        # Placed at once, the attempt has written its engine request already (it starts
        # eagerly, `Dispatcher._start`): the engine works while we write the answer.
        return record

    def cancel(
        self, task_id: str, reason: str = "cancelled by the client", kind: str = "client"
    ) -> None:
        """Cancel (API-05): idempotent; after return no further token is delivered.
        `kind` (client, disconnect, shutdown) labels the metric."""
        record = self.tasks.get(task_id)
        if record is None or record.done:
            return
        self.metrics.canceled.labels(kind).inc()
        self.dispatcher.cancel(record, TaskError("CANCELLED", reason, False))
        log.info("cancels task %s: %s", task_id, reason, extra=task_fields(record, "cancel"))

    def host_lost(self, host_id: str, reason: str) -> None:
        self.dispatcher.host_lost(host_id, reason)

    def subscriber_left(self, task_id: str) -> None:
        """A stream reader went away: cancel after the grace unless another one comes,
        or the job runs on without readers (two-step, or asked for: REL-04)."""
        record = self.tasks.get(task_id)
        if record is not None and record.detached:
            return
        self.dispatcher.spawn(self._cancel_if_abandoned(task_id))

    async def _cancel_if_abandoned(self, task_id: str) -> None:
        await asyncio.sleep(self.config.disconnect_grace_ms / 1000.0)
        record = self.tasks.get(task_id)
        if record is not None and not record.done and record.events.subscriber_count() == 0:
            self.cancel(task_id, "the client disconnected", "disconnect")

    # -- the journal: start, reads, shutdown --------------------------------------------

    async def start(self) -> None:
        """Start the journal and recover what the last run left unfinished (before the
        API serves): queued jobs are queued again in their order, running ones end
        `ORCHESTRATOR_RESTART` (retriable)."""
        journal = self.journal
        if journal is None:
            return
        if self._restarted:
            self.intake.restarted()
        await journal.start()
        rows = await journal.unfinished()
        requeued = ended = 0
        for row in rows:
            events = await journal.events(row.task_id, -1)
            spec = self._rebuild(row)
            action = plan(row) if spec is not None else EndRestarted(row.last_event_id + 1)
            if spec is None:
                spec = self._placeholder_spec(row)
            log_ = EventLog.restored(
                self.config.sse_replay_events, events, action.next_event_id, journaled=True
            )
            record = TaskRecord(spec, log_, row.created_ms, self._clock())
            record.attempts, record.detached, record.journaled = row.attempts, row.detached, True
            record.started_at_ms = row.started_ms
            self.tasks.add(record)
            if isinstance(action, EndRestarted):
                record.state = "running"
                record.pool_id = row.pool_id
                self.ledger.finish(record, "failed", error=restart_error(row))
                ended += 1
            else:
                record.queue_position = self._queue.push(row.task_id, spec.priority)
                requeued += 1
        if rows:
            log.warning(
                "recovered %d unfinished jobs from the journal: %d queued again, %d ended "
                "ORCHESTRATOR_RESTART",
                len(rows),
                requeued,
                ended,
                extra={"action": "recover"},
            )
            self.wake()
        self._loops.append(asyncio.create_task(journal.flush_loop(self.tasks.live)))
        self._loops.append(asyncio.create_task(self._prune_loop(journal)))

    def _rebuild(self, row: JournaledTask) -> TaskSpec | None:
        if self.rebuild is None:
            return None
        try:
            return self.rebuild(row)
        except Exception:  # a row this version cannot read: end it typed, say why
            log.exception("cannot rebuild journaled job %s", row.task_id)
            return None

    @staticmethod
    def _placeholder_spec(row: JournaledTask) -> TaskSpec:
        """A journaled job's spec when its request cannot be read back (only to end it
        and answer for it)."""
        return TaskSpec(
            task_id=row.task_id,
            model="",
            workload="completion",
            priority="interactive",
            request=GenerateRequest(row.task_id, Sampling(max_tokens=1)),
            needs=JobNeeds(model="", tokens=0),
            session_id=None,
            deadline_ms=None,
            correlation_id=row.correlation_id,
            api_key=row.api_key,
        )

    async def _prune_loop(self, journal: Journal) -> None:
        retention_ms = self.config.journal_retention_s * 1000
        while True:
            pruned = await journal.prune(wall_ms() - retention_ms)
            if pruned:
                log.info("journal: forgot %d jobs past retention", pruned)
            await asyncio.sleep(min(600.0, self.config.journal_retention_s / 4))

    async def lookup(self, task_id: str) -> TaskRecord | None:
        """A job by id: in memory, else as the journal kept it (within retention)."""
        record = self.tasks.get(task_id)
        if record is not None or self.journal is None:
            return record
        row = await self.journal.task(task_id)
        if row is None:
            return None
        record = self.tasks.get(task_id)  # read back by another request meanwhile
        if record is not None:
            return record
        events = await self.journal.events(task_id, -1)
        spec = self._rebuild(row) or self._placeholder_spec(row)
        record = ended_record(row, spec, events)
        if not record.done:  # unfinished rows are all in memory after start()
            return None
        self.tasks.add_finished(record)
        return record

    async def shutdown(self, grace_s: float) -> None:
        """SIGTERM (REL-06): admit nothing more; give running jobs `grace_s` to end."""
        self.intake.draining = True
        if self.journal is not None:  # queued jobs wait in the journal for the next start
            self.dispatcher.paused = True
        runners = [r.runner for r in self.tasks.live() if r.runner is not None]
        if runners and grace_s > 0:
            await asyncio.wait(runners, timeout=grace_s)

    async def close(self) -> None:
        """Stop. With the journal, queued jobs stay queued in it for the next start and
        jobs still running end `ORCHESTRATOR_RESTART` (retriable); without it, every
        live job is cancelled."""
        if self.journal is None:
            for record in self.tasks.live():
                self.cancel(record.task_id, "the orchestrator is shutting down", "shutdown")
            await self.dispatcher.close()
            return
        for record in self.tasks.live():
            if record.state == "running":
                error = TaskError(
                    "ORCHESTRATOR_RESTART",
                    "the orchestrator stopped while the job ran; submit it again",
                    True,
                )
                self.metrics.canceled.labels("shutdown").inc()
                self.dispatcher.cancel_with(record, error)
        await self.dispatcher.close()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.journal.stop(self.tasks.live())


def new_task_id() -> str:
    return uuid.uuid4().hex
