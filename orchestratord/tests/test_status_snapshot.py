"""The status snapshot's decisions (OBS-04): who sees which jobs, the queue's ETA, the
tokens/s meter, a job's summary and the token totals it is the rate of."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest
from orchestratord.events import EventLog
from orchestratord.http.status import RateMeter, Viewer, queue_eta_ms, viewer_of
from orchestratord.http.translate import task_summary
from orchestratord.placement import JobNeeds, PoolView, ReplicaView
from orchestratord.quotas import ApiKey, Quotas
from orchestratord.tasks import TaskError, TaskRecord, TaskSpec, TaskTable
from worker_adapters import GenerateRequest, Sampling


def _record(task_id: str = "t1", api_key: str | None = None, created_ms: int = 1_000) -> TaskRecord:
    spec = TaskSpec(
        task_id=task_id,
        model="tiny",
        workload="completion",
        priority="interactive",
        request=GenerateRequest(task_id, Sampling(max_tokens=4), prompt="a secret prompt"),
        needs=JobNeeds(model="tiny", tokens=8),
        session_id=None,
        deadline_ms=None,
        correlation_id="c",
        api_key=api_key,
    )
    return TaskRecord(spec, EventLog(16), created_ms, 0.0)


def _pool(**changes: Any) -> PoolView:
    base = PoolView(
        pool_id="a",
        host_id="h1",
        engine="llamacpp-inproc",
        model_id="tiny",
        model_aliases=frozenset({"default"}),
        model_digest="d1",
        ctx=2048,
        features=frozenset({"completion"}),
        ready=True,
        draining=False,
        lease_fresh=True,
        replicas=(ReplicaView(0, True, 2, 1),),  # 2 slots, 1 free
    )
    return replace(base, **changes)


def _key(name: str, role: Any) -> ApiKey:
    return ApiKey(name, hashlib.sha256(name.encode()).hexdigest(), role=role)


def test_without_keys_every_reader_sees_every_job() -> None:
    viewer = viewer_of(Quotas(()), None)
    assert viewer == Viewer(None, sees_all=True)
    assert viewer.sees(_record(api_key=None)) and viewer.sees(_record(api_key="x"))


def test_a_client_key_sees_its_own_jobs_only_and_an_admin_key_all() -> None:
    quotas = Quotas((_key("ops", "admin"), _key("app", "client"), _key("other", "client")))
    app, ops = viewer_of(quotas, "app"), viewer_of(quotas, "ops")
    assert app.sees(_record(api_key="app"))
    assert not app.sees(_record(api_key="other")) and not app.sees(_record(api_key=None))
    assert ops.sees(_record(api_key="other")) and ops.sees(_record(api_key=None))
    assert not viewer_of(quotas, None).sees(_record(api_key=None))  # keys on, no key: nothing


@pytest.mark.parametrize(
    ("queued", "views", "job_ms", "eta"),
    [
        (3, (), 1000.0, None),  # no pool serves it: waits for a load
        (3, (_pool(ready=False),), 1000.0, None),
        (3, (_pool(draining=True),), 1000.0, None),
        (3, (_pool(lease_fresh=False),), 1000.0, None),
        (3, (_pool(model_id="x", model_aliases=frozenset()),), 1000.0, None),
        (1, (_pool(),), None, 0),  # fits in the free slot
        (3, (_pool(),), None, None),  # must wait, and no job length measured yet
        (5, (_pool(),), 1000.0, 2000),  # 4 beyond the free slot, 2 slots a wave
        (5, (_pool(), _pool(pool_id="b")), 1000.0, 750),  # 3 beyond 2 free, 4 slots
    ],
)
def test_the_queue_eta_counts_waves_of_the_serving_pools_slots(
    queued: int, views: tuple[PoolView, ...], job_ms: float | None, eta: int | None
) -> None:
    lengths = {} if job_ms is None else {"default": job_ms}  # by the name jobs asked for
    assert queue_eta_ms(queued, "default", views, lengths) == eta


def test_the_meter_gives_the_rate_since_the_oldest_sample_in_its_window() -> None:
    meter = RateMeter(window_s=5.0)
    assert meter.observe(100.0, {"p1": 10}) == {"p1": 0.0}  # one sample: no rate yet
    assert meter.observe(102.0, {"p1": 30, "p2": 4}) == {"p1": 10.0, "p2": 2.0}
    assert meter.observe(104.0, {"p1": 50, "p2": 4}) == {"p1": 10.0, "p2": 1.0}
    # Past the window the oldest samples go: from 102 on, p1 made 30 in 6 s.
    assert meter.observe(108.0, {"p1": 60, "p2": 4}) == {"p1": 30 / 6, "p2": 0.0}
    assert meter.observe(108.0, {"p1": 60, "p2": 4}) == {"p1": 30 / 6, "p2": 0.0}  # same time
    assert meter.observe(200.0, {"p1": 60, "p2": 4}) == {"p1": 0.0, "p2": 0.0}  # idle


def test_token_totals_only_grow_as_jobs_stream_and_retire() -> None:
    table = TaskTable(finished_kept=1)
    first, second = _record("t1"), _record("t2")
    for record in (first, second):
        record.pool_id, record.state = "p1", "running"
        table.add(record)
    first.token_events, second.token_events = 5, 3
    assert table.tokens_streamed() == {"p1": 8}
    first.finish("completed", 2_000)
    table.retire(first)
    second.token_events = 4
    assert table.tokens_streamed() == {"p1": 9}
    second.finish("completed", 2_100)
    table.retire(second)  # the first is forgotten (one kept), its tokens are not
    assert table.tokens_streamed() == {"p1": 9}
    assert [r.task_id for r in table.recent_finished(5)] == ["t2"]


def test_a_running_jobs_summary_has_its_timings_and_tokens_so_far_and_no_prompt() -> None:
    record = _record(api_key="app", created_ms=1_000)
    record.state, record.pool_id, record.attempts = "running", "p1", 1
    record.started_at_ms, record.ttft_ms, record.token_events = 1_200, 300.0, 20
    summary = task_summary(record, now_ms=3_300)
    assert summary == {
        "task_id": "t1",
        "state": "running",
        "model": "tiny",
        "workload": "completion",
        "priority": "interactive",
        "owner": "app",
        "session_id": None,
        "queue_position": None,
        "pool_id": "p1",
        "attempts": 1,
        "created_at_ms": 1_000,
        "started_at_ms": 1_200,
        "first_token_at_ms": 1_300,
        "finished_at_ms": None,
        "queue_wait_ms": 200,
        "ttft_ms": 300.0,
        "decode_time_ms": 2000.0,
        "total_ms": 2_300,
        "tokens_in": 0,
        "tokens_out": 20,
        "tokens_per_s": 10.0,
        "finish_reason": None,
        "error_code": None,
    }
    assert "secret prompt" not in str(summary)


def test_an_end_the_journal_does_not_hold_yet_is_not_shown() -> None:
    record = _record()
    record.started_at_ms = 1_100
    record.finish("failed", 2_000, error=TaskError("WORKER_RESET", "gone", True), publish=False)
    held = task_summary(record, now_ms=2_500)
    assert held["state"] == "running" and held["finished_at_ms"] is None
    assert held["error_code"] is None and held["total_ms"] == 1_500
    record.publish_terminal()
    shown = task_summary(record, now_ms=2_500)
    assert shown["state"] == "failed" and shown["error_code"] == "WORKER_RESET"
    assert shown["finished_at_ms"] == 2_000 and shown["total_ms"] == 1_000
