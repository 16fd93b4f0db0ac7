"""Full-queue policies (ADM-02) as one pure decision.

The queue is bounded in total (`capacity`) and per priority (`lane_capacity`). When a
new task does not fit:

- `reject`: refuse it with `ADMISSION_REJECT`;
- `drop-lru`: evict to make room and admit it. When the total is full the victim is the
  oldest `batch` task, else the oldest task; when only its lane is full, the oldest task
  of that lane. The evicted task is told `QUEUE_FULL_DROP_LRU` on its stream;
- `shed-low-priority`: refuse new `batch` tasks whenever `interactive` tasks wait, and
  refuse any task that does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from orchestratord.admission.queue import Priority

__all__ = ["POLICIES", "Admit", "FullQueuePolicy", "QueueLimits", "Reject", "decide"]

FullQueuePolicy = Literal["reject", "drop-lru", "shed-low-priority"]
POLICIES: tuple[FullQueuePolicy, ...] = ("reject", "drop-lru", "shed-low-priority")


@dataclass(frozen=True, slots=True)
class QueueLimits:
    capacity: int
    lane_capacity: Mapping[Priority, int]
    policy: FullQueuePolicy = "reject"
    retry_after_ms: int = 1000


@dataclass(frozen=True, slots=True)
class Admit:
    """Admit the task; first evict the oldest task of `evict_from` when it is set."""

    evict_from: Priority | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    code: str
    message: str
    policy_label: str
    retry_after_ms: int


def decide(
    lengths: Mapping[Priority, int], priority: Priority, limits: QueueLimits
) -> Admit | Reject:
    """Admission of one new task given the current lane lengths."""
    total = sum(lengths.values())
    lane_full = lengths[priority] >= limits.lane_capacity[priority]
    total_full = total >= limits.capacity
    if limits.policy == "shed-low-priority" and priority == "batch" and lengths["interactive"]:
        return _reject(limits, "batch tasks are shed while interactive tasks wait")
    if not lane_full and not total_full:
        return Admit()
    if limits.policy != "drop-lru":
        scope = f"the {priority} lane" if lane_full else "the queue"
        return _reject(limits, f"{scope} is full ({total} tasks waiting)")
    if lane_full:
        return Admit(evict_from=priority)
    return Admit(evict_from="batch" if lengths["batch"] else "interactive")


def _reject(limits: QueueLimits, message: str) -> Reject:
    return Reject("ADMISSION_REJECT", message, limits.policy, limits.retry_after_ms)
