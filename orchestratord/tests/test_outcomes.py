"""What follows an attempt (admission.outcomes, pure) and how an attempt names what broke
under it (jobs.attempt): a replica with no adapter bound is a lost engine, a stray
KeyError while relaying is our bug and marks no replica suspect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from adapter_host import AdapterHost, ReplicaNotBound
from orchestratord.admission.outcomes import (
    AttemptLimits,
    Complete,
    Fail,
    Requeue,
    queue_expiry,
    running_expiry,
    settle,
)
from orchestratord.events import EventLog
from orchestratord.jobs.attempt import Attempt
from orchestratord.metrics import Metrics
from orchestratord.placement import JobNeeds, Placed
from orchestratord.registry import PoolRegistry
from orchestratord.stats import StatsBook
from orchestratord.tasks import TaskRecord, TaskSpec
from worker_adapters import End, Failed, GenerateRequest, Sampling, StreamEvent

LIMITS = AttemptLimits(max_attempts=3, requeue_backoff_ms=100)


def _failed(*, retriable: bool = True, before: bool = True, lost: bool = False) -> Failed:
    return Failed("WORKER_RESET", "gone", retriable, before, engine_lost=lost)


def test_an_end_completes_the_task() -> None:
    end = End(3, 5, "stop", 1.0, 2.0)
    assert settle(end, token_events=5, attempts=1, limits=LIMITS) == Complete(end)


def test_a_retriable_failure_before_the_first_token_requeues_with_doubling_backoff() -> None:
    first = settle(_failed(), token_events=0, attempts=1, limits=LIMITS)
    second = settle(_failed(), token_events=0, attempts=2, limits=LIMITS)
    assert isinstance(first, Requeue) and first.backoff_s == pytest.approx(0.1)
    assert isinstance(second, Requeue) and second.backoff_s == pytest.approx(0.2)


def test_the_last_attempt_fails_instead_of_requeueing() -> None:
    outcome = settle(_failed(), token_events=0, attempts=3, limits=LIMITS)
    assert isinstance(outcome, Fail) and outcome.error.code == "WORKER_RESET"
    assert outcome.error.retriable


def test_a_failure_after_tokens_fails_even_if_the_engine_said_before_first_token() -> None:
    outcome = settle(_failed(), token_events=2, attempts=1, limits=LIMITS)
    assert isinstance(outcome, Fail)


def test_a_non_retriable_failure_fails_at_once() -> None:
    outcome = settle(_failed(retriable=False), token_events=0, attempts=1, limits=LIMITS)
    assert isinstance(outcome, Fail) and not outcome.error.retriable


def test_a_stream_without_terminal_event_is_a_lost_engine() -> None:
    requeued = settle(None, token_events=0, attempts=1, limits=LIMITS)
    failed = settle(None, token_events=4, attempts=1, limits=LIMITS)
    assert isinstance(requeued, Requeue) and requeued.suspect
    assert isinstance(failed, Fail) and failed.suspect and failed.error.code == "WORKER_RESET"


def test_only_a_lost_engine_makes_its_replica_suspect() -> None:
    lost = settle(_failed(lost=True), token_events=0, attempts=1, limits=LIMITS)
    alive = settle(_failed(lost=False), token_events=0, attempts=1, limits=LIMITS)
    assert isinstance(lost, Requeue) and lost.suspect
    assert isinstance(alive, Requeue) and not alive.suspect


def test_queue_expiry_takes_the_tighter_of_the_deadline_and_the_queue_limit() -> None:
    assert queue_expiry(999.0, 1000, None) is None
    assert queue_expiry(1001.0, 1000, None) == 1000
    assert queue_expiry(501.0, 1000, 500) == 500
    assert queue_expiry(501.0, 1000, 5000) is None


def test_running_expiry_names_the_deadline_before_the_silence() -> None:
    assert running_expiry(10.0, 10.0, None, 100) is None
    assert running_expiry(10.0, 101.0, None, 100) == "no token for 100 ms"
    assert running_expiry(300.0, 101.0, 200, 100) == "the task passed its deadline of 200 ms"


class _HostRaising(AdapterHost):
    """An adapter host whose stream raises `error` (to see how the attempt names it)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    async def submit_batches(  # type: ignore[override]
        self, key: object, request: GenerateRequest
    ) -> AsyncIterator[Sequence[StreamEvent]]:
        raise self._error
        yield ()  # type: ignore[unreachable]  # makes this an async generator


def _record() -> TaskRecord:
    spec = TaskSpec(
        task_id="t1",
        model="m",
        workload="completion",
        priority="interactive",
        request=GenerateRequest("t1", Sampling(max_tokens=4), prompt="hi"),
        needs=JobNeeds(model="m", tokens=8),
        session_id=None,
        deadline_ms=None,
        correlation_id="c",
    )
    return TaskRecord(spec, EventLog(16), 0, 0.0, engine_job_id="t1.1", attempts=1)


async def _attempt_with(host: AdapterHost) -> StreamEvent | None:
    registry = PoolRegistry(lease_s=6.0, suspect_ttl_s=4.0)
    attempt = Attempt(host, registry, StatsBook(), Metrics(registry, dict), lambda: 0.0)
    return await attempt.run(_record(), Placed("p1", 0, ()))


def test_an_unbound_replica_is_a_lost_engine() -> None:
    outcome = asyncio.run(_attempt_with(AdapterHost()))
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.engine_lost, outcome.retriable) == ("WORKER_RESET", True, True)


def test_a_stray_key_error_while_relaying_is_an_internal_error_not_a_lost_engine() -> None:
    outcome = asyncio.run(_attempt_with(_HostRaising(KeyError("oops"))))
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.engine_lost) == ("ENGINE_ERROR", False)
    assert "KeyError" in outcome.message


def test_replica_not_bound_raised_from_the_stream_is_a_lost_engine() -> None:
    outcome = asyncio.run(_attempt_with(_HostRaising(ReplicaNotBound("p1/0"))))
    assert isinstance(outcome, Failed) and outcome.engine_lost


def test_a_reader_arriving_while_the_end_waits_for_the_journal_gets_the_end() -> None:
    async def scenario() -> list[bytes]:
        record = _record()
        record.events.append_token("a", 0)
        record.finish("completed", 1, end_json="{}", publish=False)
        assert not record.events.append_token("late", 1)  # nothing slips in before the end
        subscriber = record.events.subscribe(None)
        chunks = [await subscriber.next_chunk(5.0)]
        record.publish_terminal()
        while (chunk := await subscriber.next_chunk(5.0)) is not None:
            chunks.append(chunk)
        return [c for c in chunks if c is not None]

    chunks = asyncio.run(scenario())
    joined = b"".join(chunks)
    assert b"event: token" in joined and joined.endswith(b"event: end\ndata: {}\n\n")
    assert b"late" not in joined
