"""One attempt of a task on one replica: bind through the adapter host, relay the
engine's events into the task's `EventLog`, and return how it ended.

The attempt decides nothing about the task: it returns its terminal event (`End` or
`Failed`), or None when the stream stopped because the task already ended (cancel,
watchdog). Whatever goes wrong below it becomes a `Failed` with the right flags:
a replica with no adapter bound is a lost engine; a bug while relaying is an internal
`ENGINE_ERROR`, and never marks a healthy replica suspect. A task with a `json_schema`
ends as a success only when its whole output satisfies the schema: else the attempt's
terminal is `SCHEMA_VIOLATION` (not retriable), in place of the engine's `End`. So does
a task with tools the model may call (API-17) whose output is calls that break the
request: malformed, not a tool of the request, arguments that break its parameters,
several where one was allowed, or text where a call was required
(`worker_adapters.tools.tool_call_violation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace

from adapter_host import AdapterHost, ReplicaKey, ReplicaNotBound
from worker_adapters import End, Failed, Started, StreamEvent, Token
from worker_adapters.constraints import SCHEMA_VIOLATION, schema_violation
from worker_adapters.errors import AdapterError, EngineUnavailable, RequestRejected
from worker_adapters.tools import tool_call_violation
from worker_adapters.types import Sampling

from orchestratord.jobs.ledger import task_fields
from orchestratord.logprobs import entries_json
from orchestratord.metrics import Metrics
from orchestratord.placement import Placed
from orchestratord.registry import PoolRegistry
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskRecord

__all__ = ["Attempt"]

log = logging.getLogger("orchestratord.core")


def _abandoned(record: TaskRecord) -> Failed:
    """The outcome of an attempt given up by `host_lost` (its cancel is consumed here)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    reason, record.abandoned = record.abandoned, ""
    # Not `engine_lost`: the engine may be fine behind a partition; when its host comes
    # back its replica serves at once instead of waiting out a suspicion.
    return Failed("WORKER_RESET", reason, True, record.token_events == 0)


def _checked(end: End, sampling: Sampling, output: str) -> End | Failed:
    """The engine's `End`, or `SCHEMA_VIOLATION` when the output does not satisfy the
    task's `json_schema` or its tools (tokens were streamed: never retried)."""
    if sampling.json_schema is not None:
        reason = schema_violation(sampling.json_schema, output, finish_reason=end.finish_reason)
    else:
        assert sampling.tools is not None
        reason = tool_call_violation(
            sampling.tools,
            sampling.tool_choice,
            sampling.parallel_tool_calls,
            output,
            finish_reason=end.finish_reason,
        )
    if reason is None:
        return end
    return Failed(SCHEMA_VIOLATION, reason, False, not output)


def _checks_output(sampling: Sampling) -> bool:
    """The finished output is checked: against a JSON schema, or tools it may call."""
    calls = sampling.tools is not None and sampling.tool_choice != "none"
    return sampling.json_schema is not None or calls


class Attempt:
    def __init__(
        self,
        host: AdapterHost,
        registry: PoolRegistry,
        stats: StatsBook,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._host = host
        self._registry = registry
        self._stats = stats
        self._metrics = metrics
        self._clock = clock

    async def run(self, record: TaskRecord, placed: Placed) -> StreamEvent | None:
        """Run the attempt to its end. Re-raises a cancel that is not the task's own
        (shutdown); a cancel by `host_lost` is the attempt's `WORKER_RESET`."""
        key = ReplicaKey(placed.pool_id, placed.replica)
        try:
            if record.spec.workload == "embedding":
                return await self._embed(record, key, placed)
            return await self._stream(record, key, placed)
        except ReplicaNotBound:
            return Failed(
                "WORKER_RESET",
                f"pool {placed.pool_id} has no engine bound",
                True,
                True,
                engine_lost=True,
            )
        except asyncio.CancelledError:
            if record.abandoned and not record.done:  # host_lost: the attempt fails here
                return _abandoned(record)
            if not record.done:  # shutdown, not our own cancel of a finished task
                raise
            return None
        except Exception as exc:  # a bug below must end the task, not leave it hanging
            log.exception(
                "attempt of task %s broke: %s",
                record.task_id,
                type(exc).__name__,
                extra=task_fields(record, "attempt.error"),
            )
            return Failed(
                "ENGINE_ERROR",
                f"internal error while relaying the engine stream ({type(exc).__name__})",
                False,
                record.token_events == 0,
            )

    async def _stream(
        self, record: TaskRecord, key: ReplicaKey, placed: Placed
    ) -> StreamEvent | None:
        """Relay one generation into the task's event log; returns its terminal event."""
        request = replace(record.spec.request, job_id=record.engine_job_id)
        checked = _checks_output(request.sampling)
        output: list[str] = []  # the text, kept only to check it when `checked`
        async with contextlib.aclosing(self._host.submit_batches(key, request)) as batches:
            async for batch in batches:  # the events of one engine read
                if record.done:
                    return None
                if record.journaled_running is not None:  # once: the start is journaled
                    waiter, record.journaled_running = record.journaled_running, None
                    await waiter
                    if record.state in ("completed", "failed", "cancelled"):
                        return None  # ended while the journal wrote
                tokens: list[Token] = []
                for event in batch:
                    if type(event) is Token:
                        tokens.append(event)
                        if checked:
                            output.append(event.text)
                        continue
                    if tokens:
                        self._on_tokens(record, tokens)
                        tokens = []
                    if type(event) is Started:
                        self._on_started(record, placed, event)
                    elif checked and type(event) is End:
                        return _checked(event, request.sampling, "".join(output))
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
                tokens += len((await self._host.tokenize(key, text)).ids)
            self._on_started(record, placed, Started(tokens))
            record.embeddings = await self._host.embed(key, inputs)
        except RequestRejected as exc:
            return Failed(exc.code, str(exc), False, True)
        except AdapterError as exc:
            lost = isinstance(exc, EngineUnavailable)
            code = "WORKER_RESET" if lost else "ENGINE_ERROR"
            return Failed(code, str(exc), exc.retriable, True, engine_lost=lost)
        return End(tokens, 0, "stop", 0.0, 0.0)

    def _on_tokens(self, record: TaskRecord, tokens: list[Token]) -> None:
        """Tokens that arrived together: published together, subscribers woken once."""
        if record.spec.request.sampling.logprobs is not None:  # each with its entries
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
                known = self._stats.pool(record.pool_id).remember(keys)
                record.prefix_cached_share = known / len(keys) if keys else 0.0
        record.last_activity_mono = self._clock()
        if event.logprobs or record.spec.request.sampling.logprobs is not None:
            # A job that asked for logprobs gets them on every token event: none (`[]`)
            # on text that came with no new engine token (the tail of a character
            # whose token was already sent).
            logprobs = entries_json(event.logprobs)
            record.events.append_token_logprobs(event.text, record.token_events, logprobs)
        else:
            record.events.append_token(event.text, record.token_events)
        record.token_events += 1

    def _on_started(self, record: TaskRecord, placed: Placed, event: Started) -> None:
        record.tokens_in = event.tokens_in
        pool = self._registry.pool(placed.pool_id)
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
        self._metrics.started.inc()
        log.info(
            "starts streaming task %s from pool %s (%d prompt tokens)",
            record.task_id,
            placed.pool_id,
            event.tokens_in,
            extra=task_fields(record, "stream.start"),
        )
