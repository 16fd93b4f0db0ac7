"""Intake: from a submitted `TaskSpec` to a queued `TaskRecord`, or a typed refusal.

    session budget ─► feasibility (pure placement checks; an engine's exact token
    count when only the context is in doubt) ─► admission policy (pure) ─► quota ─►
    queue push ─► the dispatcher (a cycle at once when the queue was empty)

Nothing here waits for capacity: a task that can never be served is refused now
(ADM-01..03, PLC-06), one that can is queued and the dispatcher takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from adapter_host import AdapterHost, ReplicaKey
from worker_adapters.capabilities import refusal_reason, unsupported_params
from worker_adapters.errors import AdapterError

from orchestratord.admission import Admit, TaskQueue, decide
from orchestratord.admission.availability import PoolState, unavailable
from orchestratord.catalog import FleetCatalog
from orchestratord.config import OrchestratorConfig
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError, Detail
from orchestratord.events import EventLog
from orchestratord.job_trace import JobTrace
from orchestratord.jobs.dispatch import Dispatcher
from orchestratord.jobs.ledger import Ledger, task_fields, wall_ms
from orchestratord.journal.records import IdempotencyRecord
from orchestratord.journal.writer import Journal, JournalUnavailable
from orchestratord.metrics import Metrics
from orchestratord.placement import PoolView, Unplaceable, feasible_ever
from orchestratord.quotas import Quotas
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionStore
from orchestratord.tasks import Submission, TaskError, TaskRecord, TaskSpec, TaskTable

__all__ = ["Intake"]

log = logging.getLogger("orchestratord.core")
_UNAVAILABLE_RETRY_MS = 5000  # a failed pool restarts or is replaced in about this time


class Intake:
    def __init__(
        self,
        config: OrchestratorConfig,
        *,
        queue: TaskQueue,
        tasks: TaskTable,
        ledger: Ledger,
        dispatcher: Dispatcher,
        registry: PoolRegistry,
        host: AdapterHost,
        sessions: SessionStore,
        quotas: Quotas,
        catalog: FleetCatalog,
        metrics: Metrics,
        journal: Journal | None,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._journal = journal
        self.draining = False  # SIGTERM: admit nothing more (REL-06)
        self._limits = config.queue_limits()
        self._queue = queue
        self._tasks = tasks
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._registry = registry
        self._host = host
        self._sessions = sessions
        self._quotas = quotas
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self.deployments: DeploymentManager | None = None
        # Right after a restart, a model no pool serves yet may be one whose pool manager
        # has not dialled in again: 503 (retriable) until then (`restarted`), then 404.
        self._joining_until = 0.0

    def restarted(self) -> None:
        """This start follows an earlier run (its journal exists): for two leases, a
        model no pool serves yet is 503 POOL_UNREADY, not 404 MODEL_NOT_FOUND."""
        self._joining_until = self._clock() + 2 * self._config.lease_ms / 1000.0

    def queue_depth(self) -> dict[str, int]:
        return {p: self._queue.lane_length(p) for p in ("interactive", "batch")}

    def queued_for(self, models: frozenset[str]) -> int:
        """Tasks waiting for any of these model names (demand, for the deployments)."""
        count = 0
        for task_id in self._queue:
            record = self._tasks.get(task_id)
            if record is not None and record.spec.model in models:
                count += 1
        return count

    async def admit(
        self,
        spec: TaskSpec,
        trace: JobTrace | None,
        submission: Submission,
        idempotency: IdempotencyRecord | None = None,
    ) -> TaskRecord:
        if self.draining:
            raise ApiError(
                "SHUTTING_DOWN",
                "the orchestrator is shutting down; submit again in a moment",
                retriable=True,
                retry_after_ms=self._limits.retry_after_ms,
            )
        if spec.task_id in self._tasks:
            raise ApiError("IDEMPOTENCY_CONFLICT", f"task {spec.task_id} already exists")
        journal = self._journal if submission.wire else None
        if (
            journal is not None
            and submission.client_task_id
            and (await journal.task(spec.task_id) is not None or spec.task_id in self._tasks)
        ):
            raise ApiError("IDEMPOTENCY_CONFLICT", f"task {spec.task_id} already exists")
        if spec.session_id is not None:
            now = self._clock()
            self._sessions.check(
                self._sessions.open(spec.api_key, spec.session_id, now, spec.session_options),
                now,
            )
        # One snapshot of the pools for feasibility, the start prediction and placement.
        views = self._dispatcher.views(self._clock())
        checked = await self._check_feasible(spec, views)
        if checked is not spec:  # an engine counted the prompt (awaited): take a new one
            views = self._dispatcher.views(self._clock())
        spec = checked
        decision = decide(self.queue_depth(), spec.priority, self._limits)  # type: ignore[arg-type]
        key = self._quotas.key(spec.api_key) if spec.api_key is not None else None
        if key is not None and isinstance(decision, Admit):
            self._quotas.admit(key, self._clock())  # counts it; raises when over the limit
        if not isinstance(decision, Admit):
            self._metrics.backpressure.labels(decision.policy_label).inc()
            raise ApiError(
                decision.code,
                decision.message,
                retriable=True,
                retry_after_ms=decision.retry_after_ms,
                policy_label=decision.policy_label,
            )
        if decision.evict_from is not None:
            self._metrics.backpressure.labels("drop-lru").inc()
            self._evict(decision.evict_from)
        record = TaskRecord(
            spec,
            EventLog(self._config.sse_replay_events, journaled=journal is not None),
            wall_ms(),
            self._clock(),
        )
        record.detached = submission.detached
        accepted: asyncio.Future[None] | None = None
        if journal is not None:
            # Durable before anyone is told it was accepted (REL-01); the placement below
            # rides in the same commit, the engine starts meanwhile.
            record.journaled = True
            accepted = journal.accept(record, submission.wire, submission.route, idempotency)
        record.queue_position = self._queue.push(spec.task_id, spec.priority)
        self._metrics.enqueued.labels(spec.priority).inc()
        serving = [v for v in views if v.serves(spec.model)]
        record.predicted_start_ms = self._predict_start_ms(spec, record.queue_position, serving)
        if trace is not None:
            record.trace = trace
            trace.admitted(record.queue_position)
        record.awaiting_load = not any(v.ready for v in serving)
        self._tasks.add(record)
        if self.deployments is not None:
            self.deployments.wake()
        log.info(
            "admits task %s for %s at queue position %d",
            spec.task_id,
            spec.model,
            record.queue_position,
            extra=task_fields(record, "admit"),
        )
        if len(self._queue) == 1:
            # Alone in the queue: place it now, in the submitter's task (one task switch
            # less before the engine request; the cycle is O(1) here). With others
            # waiting, the dispatcher's next cycle places them all, in order.
            self._dispatcher.cycle(views)
        else:
            self._dispatcher.wake()
        if accepted is not None:
            assert journal is not None
            journal.write_now()  # the acceptance, with the attempt's start if it was placed
            try:
                await accepted
            except JournalUnavailable as exc:
                error = TaskError("INTERNAL", f"the job was not accepted: {exc}", True)
                self._dispatcher.cancel_with(record, error)
                raise ApiError("INTERNAL", error.message, retriable=True) from None
        return record

    async def _check_feasible(self, spec: TaskSpec, views: tuple[PoolView, ...]) -> TaskSpec:
        needs = spec.needs
        if not any(v.serves(needs.model) for v in views):
            return self._check_deployment(spec, views)
        model_ids = {v.model_id for v in views if v.serves(needs.model)}
        if all(self._catalog.retired(model_id) for model_id in model_ids):
            raise ApiError("FORBIDDEN", f"model {needs.model!r} is retired and takes no new jobs")
        self._check_available(needs.model)
        pin = needs.overrides.pin_pool_id
        if pin is not None:
            self._check_pin(pin)
        blocked = feasible_ever(needs, views)
        if blocked is None:
            return spec
        if all(r.check in ("context", "model") for r in blocked.rejections):
            exact = await self._exact_tokens(spec)
            if exact is not None:
                spec = replace(spec, needs=replace(needs, tokens=exact))
                blocked = feasible_ever(spec.needs, views)
                if blocked is None:
                    return spec
        if any(r.check == "context" for r in blocked.rejections):
            code = "CONTEXT_OVERFLOW"
        elif any(r.check == "params" for r in blocked.rejections):
            raise unsupported_param_error(blocked, needs.model)
        else:
            code = "INVALID_PARAMS"
        raise ApiError(code, _diagnosis(blocked, needs.model), details=_details(blocked))

    def _check_deployment(self, spec: TaskSpec, views: tuple[PoolView, ...]) -> TaskSpec:
        """A model with no pool yet: admitted when a deployment will load it (PLC-06)."""
        deployment = self.deployments.serving(spec.model) if self.deployments else None
        if deployment is None:
            joining_s = self._joining_until - self._clock()
            if joining_s > 0:  # just started: pool managers are still dialling in
                raise ApiError(
                    "POOL_UNREADY",
                    f"no pool serves model {spec.model!r} yet: the orchestrator started "
                    "moments ago and pool managers are still joining",
                    retriable=True,
                    retry_after_ms=max(1000, int(joining_s * 1000)),
                )
            known = sorted(
                {v.model_id for v in views} | {a for v in views for a in v.model_aliases}
            )
            raise ApiError(
                "MODEL_NOT_FOUND",
                f"no pool serves model {spec.model!r}; known models: {', '.join(known) or 'none'}",
            )
        engine = deployment.spec.engine
        missing = unsupported_params(engine, spec.needs.workload, spec.needs.params)
        if missing:
            reason = refusal_reason(engine, missing[0])
            raise ApiError(
                "UNSUPPORTED_PARAM",
                f"{missing[0]}: engine {engine!r} of deployment {deployment.spec.name} "
                f"does not honour it on {spec.needs.workload} ({reason})",
                details=[Detail(reason, field=name) for name in missing],
            )
        if spec.needs.max_tokens >= deployment.spec.ctx:
            raise ApiError(
                "CONTEXT_OVERFLOW",
                f"max_tokens {spec.needs.max_tokens} does not fit "
                f"the context of {deployment.spec.ctx} tokens of deployment "
                f"{deployment.spec.name}",
            )
        return spec

    def _check_available(self, model: str) -> None:
        """Refuse at once when every pool of the model is failed, stopped or draining
        (unless a deployment will place a new one): queued, the job would only time out."""
        pools = [
            PoolState(p.pool_id, p.state, p.draining, p.last_error)
            for p in self._registry.pools()
            if p.model_id == model or model in p.model_aliases
        ]
        reason = unavailable(pools)
        if reason is None or (self.deployments and self.deployments.serving(model)):
            return
        raise ApiError(
            "POOL_UNREADY",
            f"no pool of model {model!r} can take work now ({reason})",
            retriable=True,
            retry_after_ms=_UNAVAILABLE_RETRY_MS,
        )

    def _check_pin(self, pool_id: str) -> None:
        pool = self._registry.pool(pool_id)
        if pool is None:
            raise ApiError(
                "INVALID_PARAMS",
                f"placement.pin_pool_id: unknown pool {pool_id!r}",
                details=[Detail("unknown pool", field="placement.pin_pool_id")],
            )
        if not (pool.ready and self._registry.pool_live(pool_id, self._clock())):
            raise ApiError(
                "POOL_UNREADY",
                f"pinned pool {pool_id} is not ready",
                retriable=True,
                retry_after_ms=1000,
                pool_id=pool_id,
            )

    async def _exact_tokens(self, spec: TaskSpec) -> int | None:
        """Prompt tokens + max_tokens counted by a ready pool's tokenizer; None if none can."""
        request = spec.request
        text = (
            request.prompt
            if request.prompt is not None
            else "\n".join(m.content for m in request.messages or ())
        )
        overhead = 1 if request.prompt is not None else 16 + 8 * len(request.messages or ())
        for view in self._registry.views(self._clock()):
            ready = [r for r in view.replicas if r.ready]
            if not (view.serves(spec.needs.model) and view.ready and ready):
                continue
            try:
                tokens = await self._host.tokenize(ReplicaKey(view.pool_id, ready[0].index), text)
            except (AdapterError, LookupError):
                continue
            return len(tokens.ids) + overhead + request.sampling.max_tokens
        return None

    def _evict(self, lane: str) -> None:
        victim_id = self._queue.oldest(lane)  # type: ignore[arg-type]
        if victim_id is None:
            return
        self._queue.remove(victim_id)
        victim = self._tasks.get(victim_id)
        if victim is None:
            return
        error = TaskError(
            "QUEUE_FULL_DROP_LRU",
            "evicted from a full queue (drop-lru)",
            True,
            self._limits.retry_after_ms,
        )
        self._ledger.finish(victim, "failed", error=error)
        log.warning(
            "evicts task %s from the full queue (drop-lru)",
            victim_id,
            extra=task_fields(victim, "evict"),
        )

    def _predict_start_ms(self, spec: TaskSpec, position: int, serving: list[PoolView]) -> int:
        """When a task at `position` may start, from the pools `serving` its model."""
        views = [v for v in serving if v.ready]
        free = sum(v.slots_free for v in views)
        if free > position:
            return 0
        slots = max(1, sum(v.slots_total for v in views))
        job_ms = self._ledger.job_ms.get(spec.model, 0.0)
        return int((position + 1 - free) / slots * job_ms)


def _diagnosis(blocked: Unplaceable, model: str) -> str:
    reasons = "; ".join(f"{r.pool_id}: {r.reason}" for r in blocked.rejections[:8])
    return f"no pool can ever serve this task for model {model!r} ({reasons})"


def unsupported_param_error(blocked: Unplaceable, model: str) -> ApiError:
    """UNSUPPORTED_PARAM (API-16) naming the parameters no pool serving the model honours:
    one detail per parameter (`field`, so OpenAI's `param` names it), then the pools'."""
    refused = [r for r in blocked.rejections if r.check == "params"]
    missing = sorted({name for r in refused for name in r.wanted.split(",")})
    pools = "; ".join(f"{r.pool_id}: {r.available}" for r in refused[:8])
    message = f"{', '.join(missing)}: no pool serving model {model!r} honours it ({pools})"
    fields = [Detail("not honoured by any pool serving the model", field=m) for m in missing]
    return ApiError("UNSUPPORTED_PARAM", message, details=[*fields, *_details(blocked)])


def _details(blocked: Unplaceable) -> list[Detail]:
    return [
        Detail(r.reason, pool_id=r.pool_id, check=r.check, wanted=r.wanted, available=r.available)
        for r in blocked.rejections
    ]
