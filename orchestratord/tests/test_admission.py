"""Admission: queue order (ADM-01) and the full-queue policies (ADM-02), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from orchestratord.admission import Admit, Priority, QueueLimits, Reject, TaskQueue, decide


def limits(policy: str = "reject", capacity: int = 4, lane: int | None = None) -> QueueLimits:
    lanes = {"interactive": lane or capacity, "batch": lane or capacity}
    return QueueLimits(capacity, lanes, policy, retry_after_ms=1500)  # type: ignore[arg-type]


def test_interactive_tasks_dequeue_before_batch_and_fifo_within_a_priority() -> None:
    queue = TaskQueue()
    queue.push("b1", "batch")
    queue.push("i1", "interactive")
    queue.push("b2", "batch")
    queue.push("i2", "interactive")
    assert list(queue) == ["i1", "i2", "b1", "b2"]


def test_push_reports_how_many_tasks_dequeue_first() -> None:
    queue = TaskQueue()
    assert queue.push("b1", "batch") == 0
    assert queue.push("i1", "interactive") == 0
    assert queue.push("b2", "batch") == 2
    assert queue.position("b1") == 1


def test_requeued_task_goes_to_the_head_of_its_lane() -> None:
    queue = TaskQueue()
    queue.push("i1", "interactive")
    queue.push("b1", "batch")
    assert queue.push("b0", "batch", front=True) == 1
    assert list(queue) == ["i1", "b0", "b1"]


def test_removal_by_id_keeps_the_order_of_the_rest() -> None:
    queue = TaskQueue()
    for name in ("a", "b", "c"):
        queue.push(name, "interactive")
    assert queue.remove("b") is True
    assert queue.remove("b") is False
    assert list(queue) == ["a", "c"]
    assert "b" not in queue


def test_a_task_cannot_be_queued_twice() -> None:
    queue = TaskQueue()
    queue.push("a", "batch")
    with pytest.raises(ValueError, match="already queued"):
        queue.push("a", "interactive")


@pytest.mark.parametrize(
    ("policy", "lengths", "priority", "expected"),
    [
        ("reject", {"interactive": 1, "batch": 1}, "batch", Admit()),
        ("reject", {"interactive": 2, "batch": 2}, "interactive", "reject"),
        ("drop-lru", {"interactive": 2, "batch": 2}, "interactive", Admit(evict_from="batch")),
        (
            "drop-lru",
            {"interactive": 4, "batch": 0},
            "interactive",
            Admit(evict_from="interactive"),
        ),
        ("shed-low-priority", {"interactive": 1, "batch": 0}, "batch", "reject"),
        ("shed-low-priority", {"interactive": 0, "batch": 1}, "batch", Admit()),
        ("shed-low-priority", {"interactive": 1, "batch": 0}, "interactive", Admit()),
    ],
    ids=[
        "reject-room-left",
        "reject-full",
        "drop-lru-evicts-oldest-batch",
        "drop-lru-evicts-oldest-task-without-batch",
        "shed-batch-while-interactive-waits",
        "shed-admits-batch-when-no-interactive",
        "shed-admits-interactive",
    ],
)
def test_full_queue_policy_decisions(
    policy: str, lengths: dict[Priority, int], priority: Priority, expected: object
) -> None:
    decision = decide(lengths, priority, limits(policy))
    if expected == "reject":
        assert isinstance(decision, Reject)
        assert decision.code == "ADMISSION_REJECT"
        assert decision.policy_label == policy
        assert decision.retry_after_ms == 1500
    else:
        assert decision == expected


def test_a_full_lane_evicts_from_that_lane_under_drop_lru() -> None:
    decision = decide({"interactive": 2, "batch": 0}, "interactive", limits("drop-lru", 10, 2))
    assert decision == Admit(evict_from="interactive")


operations = st.lists(
    st.tuples(
        st.sampled_from(["push", "push_front", "remove"]),
        st.integers(0, 20),
        st.sampled_from(["interactive", "batch"]),
    ),
    max_size=80,
)


@given(operations)
def test_queue_order_matches_a_reference_model(ops: list[tuple[str, int, Priority]]) -> None:
    """Property (ADM-01): whatever the operations, iteration is interactive-first FIFO."""
    queue = TaskQueue()
    model: dict[str, list[str]] = {"interactive": [], "batch": []}
    for op, number, priority in ops:
        task_id = f"t{number}"
        if op == "remove":
            queue.remove(task_id)
            for lane in model.values():
                if task_id in lane:
                    lane.remove(task_id)
        elif task_id not in queue:
            queue.push(task_id, priority, front=op == "push_front")
            if op == "push_front":
                model[priority].insert(0, task_id)
            else:
                model[priority].append(task_id)
    assert list(queue) == model["interactive"] + model["batch"]
    assert len(queue) == len(model["interactive"]) + len(model["batch"])
