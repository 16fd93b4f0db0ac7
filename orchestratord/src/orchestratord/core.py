"""`Orchestrator`: admission, the dispatcher loop and the life of each task.

    submit ─► admission (pure) ─► queue ─► dispatcher cycle ─► placement (pure)
                                              │ reserve slot (assume)
                                              ▼
                                  run: adapter-host submit (bind) ─► events ─► EventLog
                                              │ release slot
                                              ▼
                      End ─► completed | Failed before 1st token ─► re-queue | failed

The dispatcher is the only loop that places waiting work. It wakes when a task is
queued behind others, a slot is released, the registry changes or a retry's back-off
ends, and places every waiting task it can on a frozen snapshot of the pools
(placements within one cycle see each other through `assume`). A task that arrives to an
empty queue runs the same cycle at once, in the submitter's task (no wait for the
dispatcher's turn). A task whose engine fails before its first token is put
back at the head of its lane (bounded by `max_attempts`); the replica is marked suspect
when the engine itself was lost, so the retry goes elsewhere or waits for the restart.
A task that already streamed tokens ends with the engine's typed error instead.
When a host is lost, its running attempts are abandoned at once (`host_lost`).

Past the ~800-line mark (STYLE rule 11) since the fleet work; the reason it is not split
here: issue 11 splits it along the life of a task (intake, dispatch, attempt, ledger)
before the journal lands in it, in commits of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapter_host import AdapterHost, ReplicaKey
from worker_adapters import End, Failed, Started, StreamEvent, Token
from worker_adapters.errors import AdapterError, EngineUnavailable, RequestRejected

from orchestratord.admission import Admit, TaskQueue, decide
from orchestratord.catalog import FleetCatalog
from orchestratord.config import OrchestratorConfig
from orchestratord.deployments.manager import DeploymentManager
from orchestratord.errors import ApiError, Detail
from orchestratord.events import EventLog
from orchestratord.job_trace import JobTrace
from orchestratord.logprobs import entries_json
from orchestratord.metrics import Metrics
from orchestratord.placement import (
    CycleViews,
    JobNeeds,
    Placed,
    PoolView,
    Unplaceable,
    feasible_ever,
    place,
)
from orchestratord.quotas import Quotas
from orchestratord.registry import PoolRegistry
from orchestratord.sessions import SessionOptions, SessionStore
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskError, TaskRecord, TaskSpec, TaskTable
from specs import tracing

__all__ = ["Orchestrator"]

log = logging.getLogger("orchestratord.core")
_EWMA_WEIGHT = 0.2


def _abandoned(record: TaskRecord) -> Failed:
    """The outcome of an attempt given up by `host_lost` (its cancel is consumed here)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    reason, record.abandoned = record.abandoned, ""
    # Not `engine_lost`: the engine may be fine behind a partition; when its host comes
    # back its replica serves at once instead of waiting out a suspicion.
    return Failed("WORKER_RESET", reason, True, record.token_events == 0)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
        self._limits = config.queue_limits()
        self._queue = TaskQueue()
        self.tasks = TaskTable(config.finished_tasks_kept)
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._job_ms: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.sessions = SessionStore(SessionOptions())
        self.stats = StatsBook()
        self.deployments: DeploymentManager | None = None
        self.quotas = Quotas(config.api_keys)
        self.metrics = Metrics(registry, self.queue_depth)
        self.catalog = FleetCatalog(registry, Path(config.state_dir) / "catalog.sqlite")

    # -- admission -----------------------------------------------------------------------

    def queue_depth(self) -> dict[str, int]:
        return {p: self._queue.lane_length(p) for p in ("interactive", "batch")}

    async def submit(
        self, spec: TaskSpec, *, trace_parent: Mapping[str, str] | None = None
    ) -> TaskRecord:
        """Admit a task or raise ApiError (ADM-01..03). The task is queued on return.
        With tracing on, its trace starts here, under the client's `trace_parent`."""
        if not tracing.enabled():
            record = await self._admit(spec, None)
        else:
            trace = JobTrace(spec.task_id, spec.model, spec.priority, trace_parent)
            try:
                record = await self._admit(spec, trace)
            except ApiError as exc:
                trace.rejected(exc.code)
                raise
        if record.runner is not None:
            # Placed at once: let the attempt's task send the engine request before the
            # caller answers its client (the engine works while we write the answer).
            await asyncio.sleep(0)
        return record

    async def _admit(self, spec: TaskSpec, trace: JobTrace | None) -> TaskRecord:
        if spec.task_id in self.tasks:
            raise ApiError("IDEMPOTENCY_CONFLICT", f"task {spec.task_id} already exists")
        if spec.session_id is not None:
            now = self._clock()
            self.sessions.check(self.sessions.open(spec.session_id, now, spec.session_options), now)
        # One snapshot of the pools for feasibility, the start prediction and placement.
        views = self.views(self._clock())
        checked = await self._check_feasible(spec, views)
        if checked is not spec:  # an engine counted the prompt (awaited): take a new one
            views = self.views(self._clock())
        spec = checked
        decision = decide(self.queue_depth(), spec.priority, self._limits)  # type: ignore[arg-type]
        key = self.quotas.key(spec.api_key) if spec.api_key is not None else None
        if key is not None and isinstance(decision, Admit):
            self.quotas.admit(key, self._clock())  # counts it; raises when over the limit
        if not isinstance(decision, Admit):
            self.metrics.backpressure.labels(decision.policy_label).inc()
            raise ApiError(
                decision.code,
                decision.message,
                retriable=True,
                retry_after_ms=decision.retry_after_ms,
                policy_label=decision.policy_label,
            )
        if decision.evict_from is not None:
            self.metrics.backpressure.labels("drop-lru").inc()
            self._evict(decision.evict_from)
        record = TaskRecord(
            spec, EventLog(self.config.sse_replay_events), _wall_ms(), self._clock()
        )
        record.queue_position = self._queue.push(spec.task_id, spec.priority)
        self.metrics.enqueued.labels(spec.priority).inc()
        serving = [v for v in views if v.serves(spec.model)]
        record.predicted_start_ms = self._predict_start_ms(spec, record.queue_position, serving)
        if trace is not None:
            record.trace = trace
            trace.admitted(record.queue_position)
        record.awaiting_load = not any(v.ready for v in serving)
        self.tasks.add(record)
        if self.deployments is not None:
            self.deployments.wake()
        log.info(
            "admits task %s for %s at queue position %d",
            spec.task_id,
            spec.model,
            record.queue_position,
            extra=_ids(record, "admit"),
        )
        if len(self._queue) == 1:
            # Alone in the queue: place it now, in the submitter's task (one task switch
            # less before the engine request; the cycle is O(1) here). With others
            # waiting, the dispatcher's next cycle places them all, in order.
            self._dispatch_cycle(views)
        else:
            self.wake()
        return record

    async def _check_feasible(self, spec: TaskSpec, views: tuple[PoolView, ...]) -> TaskSpec:
        needs = spec.needs
        if not any(v.serves(needs.model) for v in views):
            return self._check_deployment(spec, views)
        model_ids = {v.model_id for v in views if v.serves(needs.model)}
        if all(self.catalog.retired(model_id) for model_id in model_ids):
            raise ApiError("FORBIDDEN", f"model {needs.model!r} is retired and takes no new jobs")
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
        code = (
            "CONTEXT_OVERFLOW"
            if any(r.check == "context" for r in blocked.rejections)
            else "INVALID_PARAMS"
        )
        raise ApiError(code, _diagnosis(blocked, needs), details=_details(blocked))

    def _check_deployment(self, spec: TaskSpec, views: tuple[PoolView, ...]) -> TaskSpec:
        """A model with no pool yet: admitted when a deployment will load it (PLC-06)."""
        deployment = self.deployments.serving(spec.model) if self.deployments else None
        if deployment is None:
            known = sorted(
                {v.model_id for v in views} | {a for v in views for a in v.model_aliases}
            )
            raise ApiError(
                "MODEL_NOT_FOUND",
                f"no pool serves model {spec.model!r}; known models: {', '.join(known) or 'none'}",
            )
        if spec.needs.max_tokens >= deployment.spec.ctx:
            raise ApiError(
                "CONTEXT_OVERFLOW",
                f"max_tokens {spec.needs.max_tokens} does not fit "
                f"the context of {deployment.spec.ctx} tokens of deployment "
                f"{deployment.spec.name}",
            )
        return spec

    def queued_for(self, models: frozenset[str]) -> int:
        """Tasks waiting for any of these model names (demand, for the deployments)."""
        count = 0
        for task_id in self._queue:
            record = self.tasks.get(task_id)
            if record is not None and record.spec.model in models:
                count += 1
        return count

    def _check_pin(self, pool_id: str) -> None:
        pool = self.registry.pool(pool_id)
        if pool is None:
            raise ApiError(
                "INVALID_PARAMS",
                f"placement.pin_pool_id: unknown pool {pool_id!r}",
                details=[Detail("unknown pool", field="placement.pin_pool_id")],
            )
        if not (pool.ready and self.registry.pool_live(pool_id, self._clock())):
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
        for view in self.registry.views(self._clock()):
            ready = [r for r in view.replicas if r.ready]
            if not (view.serves(spec.needs.model) and view.ready and ready):
                continue
            try:
                tokens = await self.host.tokenize(ReplicaKey(view.pool_id, ready[0].index), text)
            except (AdapterError, LookupError):
                continue
            return len(tokens.ids) + overhead + request.sampling.max_tokens
        return None

    def _evict(self, lane: str) -> None:
        victim_id = self._queue.oldest(lane)  # type: ignore[arg-type]
        if victim_id is None:
            return
        self._queue.remove(victim_id)
        victim = self.tasks.get(victim_id)
        if victim is None:
            return
        error = TaskError(
            "QUEUE_FULL_DROP_LRU",
            "evicted from a full queue (drop-lru)",
            True,
            self._limits.retry_after_ms,
        )
        self._finish(victim, "failed", error=error)
        log.warning(
            "evicts task %s from the full queue (drop-lru)", victim_id, extra=_ids(victim, "evict")
        )

    def _predict_start_ms(self, spec: TaskSpec, position: int, serving: list[PoolView]) -> int:
        """When a task at `position` may start, from the pools `serving` its model."""
        views = [v for v in serving if v.ready]
        free = sum(v.slots_free for v in views)
        if free > position:
            return 0
        slots = max(1, sum(v.slots_total for v in views))
        job_ms = self._job_ms.get(spec.model, 0.0)
        return int((position + 1 - free) / slots * job_ms)

    # -- cancel --------------------------------------------------------------------------

    def cancel(
        self, task_id: str, reason: str = "cancelled by the client", kind: str = "client"
    ) -> None:
        """Cancel (API-05): idempotent; after return no further token is delivered.
        `kind` (client, disconnect, shutdown) labels the metric."""
        record = self.tasks.get(task_id)
        if record is None or record.done:
            return
        self.metrics.canceled.labels(kind).inc()
        self._queue.remove(task_id)
        self._finish(record, "cancelled", error=TaskError("CANCELLED", reason, False))
        runner = record.runner
        if runner is not None:
            self._spawn(self._stop_engine(record.engine_job_id, runner))
        log.info("cancels task %s: %s", task_id, reason, extra=_ids(record, "cancel"))

    def host_lost(self, host_id: str, reason: str) -> None:
        """A host left the view (control stream closed, lease expired): attempts running
        on its pools are abandoned at once, not left to the idle watchdog. One that has
        streamed nothing is re-queued for other hosts; one that has ends with a
        retriable `WORKER_RESET`. Its engine is not told: it may be unreachable; a
        partition that heals finds the stream gone."""
        for record in self.tasks.live():
            runner, pool_id = record.runner, record.pool_id
            if record.state != "running" or runner is None or pool_id is None:
                continue
            pool = self.registry.pool(pool_id)
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
                extra=_ids(record, "host.lost"),
            )

    async def _stop_engine(self, engine_job_id: str, runner: asyncio.Task[None]) -> None:
        with contextlib.suppress(AdapterError):
            await self.host.cancel(engine_job_id)
        runner.cancel()

    # -- the dispatcher ------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The dispatcher loop and the lease loop; runs until cancelled."""
        lease = asyncio.create_task(self._lease_loop())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._dispatch_cycle()
        finally:
            lease.cancel()

    async def _lease_loop(self) -> None:
        period = self.config.heartbeat_interval_ms / 2000.0
        while True:
            await asyncio.sleep(period)
            now = self._clock()
            self.registry.expire(now)
            self.sessions.sweep(now)
            self._watchdog(now)
            self.wake()

    def _watchdog(self, now: float) -> None:
        """ADM-06: end running tasks past their deadline or silent for `idle_timeout_ms`."""
        idle_s = self.config.idle_timeout_ms / 1000.0
        for record in self.tasks.live():
            if record.state != "running":
                continue
            deadline = record.spec.deadline_ms
            if deadline is not None and (now - record.created_mono) * 1000.0 > deadline:
                reason = f"the task passed its deadline of {deadline} ms"
            elif now - record.last_activity_mono > idle_s:
                reason = f"no token for {self.config.idle_timeout_ms} ms"
            else:
                continue
            self._finish(record, "failed", error=TaskError("DECODE_TIMEOUT", reason, True))
            if record.runner is not None:
                self._spawn(self._stop_engine(record.engine_job_id, record.runner))
            log.warning("ends task %s: %s", record.task_id, reason, extra=_ids(record, "watchdog"))

    def views(self, now: float) -> tuple[PoolView, ...]:
        """The registry's pools with what the orchestrator measured of them (rates and
        prompt-prefix index); with `routing: least_loaded`, without: every pool is then
        predicted alike and free slots decide."""
        if self.config.routing == "least_loaded":
            return tuple(self.registry.views(now))
        views = []
        for view in self.registry.views(now):
            stats = self.stats.known(view.pool_id)
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
        session = self.sessions.get(session_id, now) if session_id is not None else None
        if session is None or session.pool_id is None or session.replica is None:
            return needs
        replica = self.registry.replica(session.pool_id, session.replica)
        if replica is None or replica.incarnation != session.incarnation:
            return needs
        return replace(needs, session_pool=session.pool_id)

    def _dispatch_cycle(self, views: tuple[PoolView, ...] | None = None) -> None:
        """Place every waiting task it can; `views`: this instant's pools, if taken."""
        now = self._clock()
        pools = CycleViews(views if views is not None else self.views(now))
        blocked: set[JobNeeds] = set()  # needs without prefix keys: those only score
        next_retry: float | None = None
        for task_id in list(self._queue):
            record = self.tasks.get(task_id)
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
                self.metrics.placements.labels(outcome).inc()
                blocked.add(feasibility)
                continue
            self.metrics.placements.labels("placed").inc()
            pools.take(decision)
            self._start(record, decision)
        if next_retry is not None:
            self._schedule_wake(next_retry - now)

    def _expired(self, record: TaskRecord, now: float) -> bool:
        waited_ms = (now - record.created_mono) * 1000.0
        limit = self.config.max_queue_wait_ms
        if record.spec.deadline_ms is not None:
            limit = min(limit, record.spec.deadline_ms)
        if waited_ms <= limit:
            return False
        self._queue.remove(record.task_id)
        error = TaskError(
            "NO_CAPACITY",
            f"no pool could take the task within {limit} ms",
            True,
            self._limits.retry_after_ms,
        )
        self._finish(record, "failed", error=error)
        return True

    def _schedule_wake(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), self.wake)

    def _start(self, record: TaskRecord, placed: Placed) -> None:
        self._queue.remove(record.task_id)
        self.registry.reserve(placed.pool_id, placed.replica)
        record.state = "running"
        record.last_activity_mono = self._clock()
        record.attempts += 1
        record.pool_id, record.replica = placed.pool_id, placed.replica
        record.engine_job_id = f"{record.task_id}.{record.attempts}"
        if record.started_at_ms is None:
            record.started_at_ms = _wall_ms()
        log.info(
            "places task %s on pool %s replica %d (attempt %d)",
            record.task_id,
            placed.pool_id,
            placed.replica,
            record.attempts,
            extra=_ids(record, "place"),
        )
        trace = record.trace
        context = trace.placed(placed.pool_id, placed.replica, record.attempts) if trace else None
        record.runner = asyncio.get_running_loop().create_task(
            self._run(record, placed), context=context
        )

    # -- one attempt ---------------------------------------------------------------------

    async def _run(self, record: TaskRecord, placed: Placed) -> None:
        key = ReplicaKey(placed.pool_id, placed.replica)
        outcome: StreamEvent | None = None
        attempt_started = self._clock()
        try:
            if record.spec.workload == "embedding":
                outcome = await self._embed(record, key, placed)
            else:
                outcome = await self._stream(record, key, placed)
        except LookupError:
            outcome = Failed(
                "WORKER_RESET",
                f"pool {placed.pool_id} has no engine bound",
                True,
                True,
                engine_lost=True,
            )
        except asyncio.CancelledError:
            if record.abandoned and not record.done:  # host_lost: the attempt fails here
                outcome = _abandoned(record)
            elif not record.done:  # shutdown, not our own cancel of a finished task
                raise
        except Exception as exc:  # a bug below must end the task, not leave it hanging
            log.exception(
                "attempt of task %s broke: %s",
                record.task_id,
                type(exc).__name__,
                extra=_ids(record, "attempt.error"),
            )
            outcome = Failed(
                "ENGINE_ERROR",
                f"internal error while relaying the engine stream ({type(exc).__name__})",
                False,
                record.token_events == 0,
            )
        finally:
            self.registry.release(placed.pool_id, placed.replica)
            record.runner = None
        if record.trace is not None:
            record.trace.attempt_ended(outcome)
        if not record.done:
            self._settle(record, placed, outcome, attempt_started)
        self.tasks.retire(record)

    async def _stream(
        self, record: TaskRecord, key: ReplicaKey, placed: Placed
    ) -> StreamEvent | None:
        """Relay one generation into the task's event log; returns its terminal event."""
        request = replace(record.spec.request, job_id=record.engine_job_id)
        async with contextlib.aclosing(self.host.submit_batches(key, request)) as batches:
            async for batch in batches:  # the events of one engine read
                if record.done:
                    return None
                tokens: list[Token] = []
                for event in batch:
                    if type(event) is Token:
                        tokens.append(event)
                        continue
                    if tokens:
                        self._on_tokens(record, tokens)
                        tokens = []
                    if type(event) is Started:
                        self._on_started(record, placed, event)
                    else:
                        return event
                if tokens:
                    self._on_tokens(record, tokens)
        return None

    async def _embed(self, record: TaskRecord, key: ReplicaKey, placed: Placed) -> StreamEvent:
        """One embedding request: count the input tokens, then embed (API-13)."""
        inputs = record.spec.inputs
        try:
            tokens = 0
            for text in inputs:
                tokens += len((await self.host.tokenize(key, text)).ids)
            self._on_started(record, placed, Started(tokens))
            record.embeddings = await self.host.embed(key, inputs)
        except RequestRejected as exc:
            return Failed(exc.code, str(exc), False, True)
        except AdapterError as exc:
            lost = isinstance(exc, EngineUnavailable)
            code = "WORKER_RESET" if lost else "ENGINE_ERROR"
            return Failed(code, str(exc), exc.retriable, True, engine_lost=lost)
        return End(tokens, 0, "stop", 0.0, 0.0)

    def _on_tokens(self, record: TaskRecord, tokens: list[Token]) -> None:
        """Tokens that arrived together: published together, subscribers woken once."""
        if any(t.logprobs for t in tokens):
            for event in tokens:
                self._on_token(record, event)
            return
        if record.first_token_mono is None:
            self._on_token(record, tokens[0])  # TTFT and the pool's prompt cache
            tokens = tokens[1:]
            if not tokens:
                return
        record.last_activity_mono = self._clock()
        record.events.append_tokens([t.text for t in tokens], record.token_events)
        record.token_events += len(tokens)

    def _on_token(self, record: TaskRecord, event: Token) -> None:
        if record.first_token_mono is None:
            record.first_token_mono = self._clock()
            record.ttft_ms = (record.first_token_mono - record.created_mono) * 1000.0
            if record.pool_id is not None:  # the prompt is in this pool's cache now
                keys = record.spec.needs.prefix_keys
                known = self.stats.pool(record.pool_id).remember(keys)
                record.prefix_cached_share = known / len(keys) if keys else 0.0
        record.last_activity_mono = self._clock()
        if event.logprobs:  # only tasks that asked for logprobs carry them
            logprobs = entries_json(event.logprobs)
            record.events.append_token_logprobs(event.text, record.token_events, logprobs)
        else:
            record.events.append_token(event.text, record.token_events)
        record.token_events += 1

    def _on_started(self, record: TaskRecord, placed: Placed, event: Started) -> None:
        record.tokens_in = event.tokens_in
        pool = self.registry.pool(placed.pool_id)
        if record.attempts > 1 and record.events.last_id >= 0:
            retry = {"retry_attempt": record.attempts, "pool_id": placed.pool_id}
            record.events.append("metrics", json.dumps(retry))
            return
        started = {
            "queue_position": record.queue_position,
            "predicted_start_ms": record.predicted_start_ms,
            "pool_id": placed.pool_id,
            "engine": pool.engine if pool else "",
            "engine_version": pool.engine_version if pool else "",
            "model_digest": pool.model_digest if pool else "",
            "tokens_in": event.tokens_in,
        }
        if record.awaiting_load:
            started["load_ms"] = int((self._clock() - record.created_mono) * 1000.0)
        record.events.append("started", json.dumps(started))
        self.metrics.started.inc()
        log.info(
            "starts streaming task %s from pool %s (%d prompt tokens)",
            record.task_id,
            placed.pool_id,
            event.tokens_in,
            extra=_ids(record, "stream.start"),
        )

    def _settle(
        self,
        record: TaskRecord,
        placed: Placed,
        outcome: StreamEvent | None,
        attempt_started: float,
    ) -> None:
        if isinstance(outcome, End):
            self._complete(record, outcome, attempt_started)
            return
        failure = (
            outcome
            if isinstance(outcome, Failed)
            else Failed(
                "WORKER_RESET",
                "engine stream ended without a terminal event",
                True,
                record.token_events == 0,
                engine_lost=True,
            )
        )
        if failure.engine_lost:
            self.registry.mark_suspect(placed.pool_id, placed.replica, self._clock())
        may_retry = failure.retriable and failure.before_first_token and record.token_events == 0
        if may_retry and record.attempts < self.config.max_attempts:
            self._requeue(record, failure)
            return
        self._finish(
            record, "failed", error=TaskError(failure.code, failure.message, failure.retriable)
        )

    def _requeue(self, record: TaskRecord, failure: Failed) -> None:
        record.state = "queued"
        record.pool_id = record.replica = None
        backoff_s = self.config.requeue_backoff_ms / 1000.0 * (2 ** (record.attempts - 1))
        record.not_before = self._clock() + backoff_s
        self._queue.push(record.task_id, record.spec.priority, front=True)
        log.warning(
            "re-queues task %s: %s before its first token (%s)",
            record.task_id,
            failure.code,
            failure.message,
            extra=_ids(record, "requeue"),
        )
        self._schedule_wake(backoff_s)

    def _complete(self, record: TaskRecord, end: End, attempt_started: float) -> None:
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
        self._finish(record, "completed", end_json=json.dumps(body))
        self.metrics.tokens_in.inc(record.tokens_in)
        self.metrics.tokens_out.inc(record.tokens_out)
        self.metrics.ttft.observe(record.ttft_ms)
        self.metrics.decode.observe(record.decode_time_ms)
        self._learn(record, attempt_started, now)
        elapsed_ms = (now - attempt_started) * 1000.0
        previous = self._job_ms.get(record.spec.model)
        self._job_ms[record.spec.model] = (
            elapsed_ms if previous is None else previous + _EWMA_WEIGHT * (elapsed_ms - previous)
        )

    def _learn(self, record: TaskRecord, attempt_started: float, now: float) -> None:
        """Feed the completed turn to the pool's measurements and the task's session."""
        pool_id, replica = record.pool_id, record.replica
        if pool_id is None or replica is None:
            return
        first = record.first_token_mono or now
        self.stats.pool(pool_id).observe(
            prefill_tokens=record.tokens_in * (1.0 - record.prefix_cached_share),
            tokens_out=record.tokens_out,
            prefill_s=first - attempt_started,
            decode_s=now - first,
        )
        if record.spec.session_id is not None:
            info = self.registry.replica(pool_id, replica)
            self.sessions.record_turn(
                record.spec.session_id,
                now,
                pool_id=pool_id,
                replica=replica,
                incarnation=info.incarnation if info else 0,
                tokens=record.tokens_out,
                time_ms=record.decode_time_ms or 0.0,
            )

    def _finish(
        self,
        record: TaskRecord,
        state: str,
        *,
        error: TaskError | None = None,
        end_json: str | None = None,
    ) -> None:
        if record.finish(state, _wall_ms(), error=error, end_json=end_json):  # type: ignore[arg-type]
            self.metrics.finished.labels(state).inc()
            if record.runner is None:
                self.tasks.retire(record)
            if record.spec.api_key is not None:
                self.quotas.finished(
                    record.spec.api_key, self._clock(), record.tokens_in + record.tokens_out
                )
            if record.trace is not None:
                first = record.first_token_mono
                record.trace.end(
                    state,
                    error.code if error else None,
                    (record.tokens_in, record.tokens_out),
                    self._clock() - first if first is not None else None,
                )
            log.info(
                "ends the stream of task %s: %s%s",
                record.task_id,
                state,
                f" ({error.code}: {error.message})" if error else "",
                extra=_ids(record, "stream.end"),
            )

    # -- client disconnects --------------------------------------------------------------

    def subscriber_left(self, task_id: str) -> None:
        """A stream reader went away: cancel after the grace unless another one comes."""
        self._spawn(self._cancel_if_abandoned(task_id))

    async def _cancel_if_abandoned(self, task_id: str) -> None:
        await asyncio.sleep(self.config.disconnect_grace_ms / 1000.0)
        record = self.tasks.get(task_id)
        if record is not None and not record.done and record.events.subscriber_count() == 0:
            self.cancel(task_id, "the client disconnected", "disconnect")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for record in self.tasks.live():
            self.cancel(record.task_id, "the orchestrator is shutting down", "shutdown")
        runners = [r.runner for r in self.tasks.live() if r.runner is not None]
        for task in [*runners, *self._background]:
            task.cancel()
        await asyncio.gather(*runners, *self._background, return_exceptions=True)


def new_task_id() -> str:
    return uuid.uuid4().hex


def _ids(record: TaskRecord, action: str) -> dict[str, object]:
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


def _diagnosis(blocked: Unplaceable, needs: JobNeeds) -> str:
    reasons = "; ".join(f"{r.pool_id}: {r.reason}" for r in blocked.rejections[:8])
    return f"no pool can ever serve this task for model {needs.model!r} ({reasons})"


def _details(blocked: Unplaceable) -> list[Detail]:
    return [
        Detail(r.reason, pool_id=r.pool_id, check=r.check, wanted=r.wanted, available=r.available)
        for r in blocked.rejections
    ]
