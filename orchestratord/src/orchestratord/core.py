"""`Orchestrator`: the task life of `orchestratord.jobs`, composed behind one facade.

    submit ─► Intake ─► queue ─► Dispatcher cycle ─► placement (pure)
                                      │ reserve slot (assume)
                                      ▼
                          Attempt: adapter-host submit (bind) ─► events ─► EventLog
                                      │ release slot; outcome ─► admission.outcomes
                                      ▼
              completed | re-queued (before the 1st token) | failed ─► Ledger

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

from orchestratord.admission import TaskQueue
from orchestratord.catalog import FleetCatalog
from orchestratord.config import OrchestratorConfig
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError
from orchestratord.job_trace import JobTrace
from orchestratord.jobs.attempt import Attempt
from orchestratord.jobs.dispatch import Dispatcher
from orchestratord.jobs.intake import Intake
from orchestratord.jobs.ledger import Ledger, task_fields
from orchestratord.metrics import Metrics
from orchestratord.placement import PoolView
from orchestratord.quotas import Quotas
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionOptions, SessionStore
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskError, TaskRecord, TaskSpec, TaskTable
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
        self.tasks = TaskTable(config.finished_tasks_kept)
        self.sessions = SessionStore(SessionOptions())
        self.stats = StatsBook()
        self.quotas = Quotas(config.api_keys)
        self.catalog = FleetCatalog(registry, Path(config.state_dir) / "catalog.sqlite")
        self._queue = queue
        self.metrics = Metrics(registry, self.queue_depth)
        self.ledger = Ledger(
            self.tasks,
            metrics=self.metrics,
            quotas=self.quotas,
            stats=self.stats,
            sessions=self.sessions,
            registry=registry,
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
            clock=clock,
        )

    @property
    def deployments(self) -> DeploymentManager | None:
        return self.intake.deployments

    @deployments.setter
    def deployments(self, manager: DeploymentManager | None) -> None:
        self.intake.deployments = manager

    def queue_depth(self) -> dict[str, int]:
        return {p: self._queue.lane_length(p) for p in ("interactive", "batch")}

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
        self, spec: TaskSpec, *, trace_parent: Mapping[str, str] | None = None
    ) -> TaskRecord:
        """Admit a task or raise ApiError (ADM-01..03). The task is queued on return.
        With tracing on, its trace starts here, under the client's `trace_parent`."""
        if not tracing.enabled():
            record = await self.intake.admit(spec, None)
        else:
            trace = JobTrace(spec.task_id, spec.model, spec.priority, trace_parent)
            try:
                record = await self.intake.admit(spec, trace)
            except ApiError as exc:
                trace.rejected(exc.code)
                raise
        if record.runner is not None:
            # Placed at once: let the attempt's task send the engine request before the
            # caller answers its client (the engine works while we write the answer).
            await asyncio.sleep(0)
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
        """A stream reader went away: cancel after the grace unless another one comes."""
        self.dispatcher.spawn(self._cancel_if_abandoned(task_id))

    async def _cancel_if_abandoned(self, task_id: str) -> None:
        await asyncio.sleep(self.config.disconnect_grace_ms / 1000.0)
        record = self.tasks.get(task_id)
        if record is not None and not record.done and record.events.subscriber_count() == 0:
            self.cancel(task_id, "the client disconnected", "disconnect")

    async def close(self) -> None:
        for record in self.tasks.live():
            self.cancel(record.task_id, "the orchestrator is shutting down", "shutdown")
        await self.dispatcher.close()


def new_task_id() -> str:
    return uuid.uuid4().hex
