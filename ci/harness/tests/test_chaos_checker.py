"""The chaos checker's rules on hand-made histories: a clean history passes every rule,
and each rule fails on a history that breaks it (REL-01..05, REL-07). Also the seeded
schedule and the table. Pure: no process is started."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from ci_harness.chaos.checker import (
    check,
    double_terminals,
    idempotency_mismatches,
    lost_jobs,
    resume_mismatches,
)
from ci_harness.chaos.nemesis import FAULT_KINDS, Topology, schedule
from ci_harness.chaos.report import table

Record = dict[str, Any]
Event = tuple[Any, ...]  # (name, id, ...): token (i, text), error (code)


class Story:
    """A history written by hand, one step at a time (each step one second later)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.clock = 0.0
        self.next_req = 0

    def _add(self, type_: str, **fields: Any) -> Record:
        self.clock += 1.0
        record = {"type": type_, "mono": self.clock, "wall": self.clock, **fields}
        self.records.append(record)
        return record

    def _request(self, op: str, job: str | None, **fields: Any) -> int:
        self.next_req += 1
        self._add("request", req=self.next_req, job=job, op=op, **fields)
        return self.next_req

    def setup(self, hosts: dict[str, list[str]]) -> Story:
        self._add("setup", seed=1, hosts=hosts, schedule=[])
        return self

    def submit(
        self,
        job: str,
        task_id: str | None,
        status: int | None = 202,
        idem: str | None = None,
        digest: str = "body-1",
        probe: bool = False,
    ) -> Story:
        req = self._request("submit", job, idem=idem, digest=digest, probe=probe)
        self._add("response", req=req, status=status, task_id=task_id)
        return self

    def read(
        self,
        job: str | None,
        task_id: str,
        events: list[Event],
        after_id: int | None = None,
        op: str = "events",
        idem: str | None = None,
        digest: str = "",
    ) -> Story:
        fields = {"task_id": task_id} if op in ("events", "replay") else {}
        req = self._request(op, job, after_id=after_id, idem=idem, digest=digest, **fields)
        self._add("response", req=req, status=200, task_id=task_id)
        for event in events:
            self._add("event", req=req, task_id=task_id, **_event(event))
        return self

    def final(
        self, task_id: str, state: str = "completed", code: str | None = None, status: int = 200
    ) -> Story:
        self._add("final", task_id=task_id, status=status, state=state, code=code, pool="p1")
        return self

    def replay(self, task_id: str, events: list[Event]) -> Story:
        return self.read(None, task_id, events, op="replay")

    def fault(self, kind: str, host: str | None, start: float, end: float) -> Story:
        plan = {"kind": kind, "host": host, "role": "x", "seq": 0}
        self._add("fault", plan=plan, start=start, end=end)
        return self


def _event(event: Event) -> Record:
    name, event_id, *rest = event
    if name == "token":
        return {"name": name, "id": event_id, "i": rest[0], "t": rest[1]}
    if name == "error":
        return {"name": name, "id": event_id, "code": rest[0]}
    if name == "started":
        return {"name": name, "id": event_id, "pool": "p1"}
    return {"name": name, "id": event_id}


def tokens(first_id: int | None, first_index: int, texts: str) -> list[Event]:
    """Token events; `first_id` None for /v1 chunks, which carry no event id."""
    return [
        ("token", None if first_id is None else first_id + n, first_index + n, t)
        for n, t in enumerate(texts)
    ]


FULL = [("started", 0), *tokens(1, 0, "abcd"), ("end", 5)]


def clean_story() -> Story:
    """Two-step job read with a leave and a resume; a one-round-trip job; an idempotent
    retry; a refused probe; a job never accepted."""
    story = Story().setup({"h1": ["p1"]})
    story.submit("j1", None, status=None, idem="k1")  # no answer: the orchestrator was down
    story.submit("j1", "t1", idem="k1")  # the retry with the same key
    story.submit("j1", None, status=422, idem="k1", digest="body-2", probe=True)
    story.read("j1", "t1", [("started", 0), *tokens(1, 0, "ab")])  # leaves after 2 tokens
    story.read("j1", "t1", [*tokens(3, 2, "cd"), ("end", 5)], after_id=2)
    story.read(
        "j2", "t2", [*tokens(None, 0, "xy"), ("end", None)], op="chat", idem="k2", digest="c"
    )
    story.submit("j3", None, status=503)  # never accepted
    story.final("t1").replay("t1", FULL)
    story.final("t2").replay("t2", [("started", 0), *tokens(1, 0, "xy"), ("end", 3)])
    return story


def test_a_clean_history_passes_every_rule_and_counts_the_job_never_accepted() -> None:
    verdict = check(clean_story().records)
    assert verdict.ok, verdict
    assert verdict.accepted == 2 and verdict.never_accepted == 1


# -- rule 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "replay", "why"),
    [
        (None, None, "no final read"),
        ({"status": 404}, None, "answered 404"),
        ({"state": "running"}, None, "still running"),
        ({}, [("started", 0), *tokens(1, 0, "ab")], "replay has no terminal"),
    ],
)
def test_an_accepted_job_without_a_terminal_state_at_the_end_is_lost(
    final: dict[str, Any] | None, replay: list[Event] | None, why: str
) -> None:
    story = Story().submit("j1", "t1")
    if final is not None:
        story.final("t1", **final)
    if replay is not None:
        story.replay("t1", replay)
    (lost,) = lost_jobs(story.records)
    assert lost.task_id == "t1" and why in lost.detail


def test_a_one_round_trip_stream_counts_as_accepted_from_its_first_event() -> None:
    story = Story().read("j1", "t9", tokens(None, 0, "a"), op="completion")
    assert [v.task_id for v in lost_jobs(story.records)] == ["t9"]
    assert lost_jobs(Story().submit("j1", None, status=503).records) == []


def test_a_stream_answered_with_its_job_id_but_cut_before_any_event_is_accepted() -> None:
    story = Story()
    story.read("j1", "t5", [], op="stream_v2")  # 200, X-Llorch-Task-Id: t5, then cut
    assert [v.task_id for v in lost_jobs(story.records)] == ["t5"]


# -- rule 2 ------------------------------------------------------------------------------


def test_a_job_seen_completed_by_its_reader_but_failed_at_the_end_has_two_terminals() -> None:
    story = Story().submit("j1", "t1").read("j1", "t1", FULL)
    story.final("t1", state="failed", code="INTERNAL")
    (found,) = double_terminals(story.records)
    assert found.task_id == "t1" and "INTERNAL" in found.detail


def test_a_read_with_an_event_after_its_terminal_event_is_a_double_terminal() -> None:
    story = Story().submit("j1", "t1")
    story.read("j1", "t1", [("started", 0), ("end", 1), ("error", 2, "WORKER_RESET")])
    assert {v.rule for v in double_terminals(story.records)} == {"double_terminal"}
    assert len(double_terminals(story.records)) == 2  # the order, and the two states


# -- rule 3 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resumed", "after_id", "why"),
    [
        ([*tokens(4, 3, "d"), ("end", 5)], 2, "token index 3 where 2 was due"),  # a gap
        ([*tokens(2, 1, "bcd"), ("end", 5)], 2, "token index 1 where 2 was due"),  # a repeat
        ([*tokens(3, 2, "cd"), ("end", 5)], 1, "resumed after id 1"),  # wrong Last-Event-ID
        ([("token", 2, 2, "c"), ("token", 4, 3, "d"), ("end", 5)], 2, "event id 2 after id 2"),
    ],
)
def test_a_resumed_stream_with_a_gap_a_repeat_or_a_wrong_resume_point_is_a_mismatch(
    resumed: list[Event], after_id: int, why: str
) -> None:
    story = Story().submit("j1", "t1")
    story.read("j1", "t1", [("started", 0), *tokens(1, 0, "ab")])
    story.read("j1", "t1", resumed, after_id=after_id)
    story.final("t1").replay("t1", FULL)
    details = [v.detail for v in resume_mismatches(story.records)]
    assert any(why in d for d in details), details


def test_a_token_whose_text_differs_from_the_final_replay_is_a_mismatch() -> None:
    story = Story().submit("j1", "t1").read("j1", "t1", [("started", 0), *tokens(1, 0, "abXd")])
    story.final("t1").replay("t1", FULL)
    (found,) = resume_mismatches(story.records)
    assert "token 2" in found.detail and "'X'" in found.detail


def test_a_replay_that_kept_fewer_tokens_than_the_client_saw_is_consistent() -> None:
    """After an orchestrator crash the journal may miss the last tokens a client saw; the
    job then ends with an error whose id is past anything sent before."""
    story = Story().submit("j1", "t1").read("j1", "t1", [("started", 0), *tokens(1, 0, "abcd")])
    story.read("j1", "t1", [("error", 100, "WORKER_RESET")], after_id=4)
    story.final("t1", state="failed", code="WORKER_RESET")
    story.replay("t1", [("started", 0), *tokens(1, 0, "ab"), ("error", 100, "WORKER_RESET")])
    assert resume_mismatches(story.records) == []
    assert double_terminals(story.records) == []


def test_a_completed_job_whose_replay_lacks_tokens_a_client_read_is_a_mismatch() -> None:
    story = Story().submit("j1", "t1").read("j1", "t1", FULL)
    story.final("t1").replay("t1", [("started", 0), *tokens(1, 0, "ab"), ("end", 5)])
    (found,) = resume_mismatches(story.records)
    assert "lacks tokens 2..3" in found.detail


def test_a_second_fresh_read_of_a_v1_retry_starts_again_from_index_zero() -> None:
    story = Story()
    story.read("j1", "t1", tokens(None, 0, "ab"), op="chat", idem="k", digest="c")
    story.read(
        "j1", "t1", [*tokens(None, 0, "abcd"), ("end", None)], op="chat", idem="k", digest="c"
    )
    story.final("t1").replay("t1", FULL)
    assert resume_mismatches(story.records) == []


# -- rule 4 ------------------------------------------------------------------------------


def test_one_key_and_body_answered_with_two_jobs_is_an_idempotency_mismatch() -> None:
    story = Story().submit("j1", "t1", idem="k1").submit("j1", "t2", idem="k1")
    (found,) = idempotency_mismatches(story.records)
    assert found.task_id == "k1" and "t1" in found.detail and "t2" in found.detail


def test_a_key_reused_with_another_body_must_be_refused_with_422() -> None:
    served = Story().submit("j1", "t1", idem="k1")
    served.submit("j1", "t2", idem="k1", digest="body-2", probe=True)
    assert [v.detail for v in idempotency_mismatches(served.records)] == [
        "another body with the key got 202"
    ]
    refused = Story().submit("j1", "t1", idem="k1")
    refused.submit("j1", None, status=422, idem="k1", digest="body-2", probe=True)
    assert idempotency_mismatches(refused.records) == []


def test_a_retry_with_the_same_body_refused_with_422_is_a_mismatch() -> None:
    story = Story().submit("j1", "t1", idem="k1").submit("j1", None, status=422, idem="k1")
    assert len(idempotency_mismatches(story.records)) == 1


# -- the schedule and the table ------------------------------------------------------------------


def test_the_schedule_is_the_same_for_the_same_seed_and_has_every_kind_per_kind_times() -> None:
    topology = Topology(worker_host="hw", engine_host="he")
    plans = schedule(7, 30, 150.0, topology)
    assert plans == schedule(7, 30, 150.0, topology)
    assert plans != schedule(8, 30, 150.0, topology)
    assert Counter(p.kind for p in plans) == dict.fromkeys(FAULT_KINDS, 30)
    assert all(0 <= p.at_s <= 150.0 for p in plans)
    assert [p.at_s for p in plans] == sorted(p.at_s for p in plans)
    for plan in plans:
        if plan.kind == "sigstop":
            assert 1.0 <= plan.duration_s <= 5.0
        elif plan.kind == "partition":
            assert 1.0 <= plan.duration_s <= 4.0 and plan.host in ("hw", "he")
        else:
            assert plan.duration_s == 0.0
    assert {p.host for p in plans if p.kind == "kill9-worker"} == {"hw"}
    assert {p.host for p in plans if p.kind == "kill9-engine"} == {"he"}


def test_the_table_counts_faults_and_the_jobs_live_on_the_hit_host() -> None:
    story = Story().setup({"h1": ["p1"], "h2": ["p2"]})
    story.submit("j1", "t1").read("j1", "t1", FULL)  # live from t=3 to t=11
    story.final("t1").replay("t1", FULL)
    story.fault("partition", "h1", start=4.0, end=5.0)  # hits t1 (its pool p1 is on h1)
    story.fault("partition", "h2", start=4.0, end=5.0)  # hits nothing
    story.fault("kill9-orchestrator", None, start=100.0, end=101.0)  # after t1 ended
    text = table(story.records, check(story.records))
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines()[2:9]}
    assert [c.strip() for c in rows["partition"][:4]] == ["2", "0", "1", "1"]
    assert [c.strip() for c in rows["kill9-orchestrator"][:3]] == ["1", "0", "0"]
    assert "lost jobs: 0" in text and "resume mismatches: 0" in text
