"""Admission: the bounded priority queue and the full-queue policies (pure; ADM-01..03).

No I/O, no clock: callers pass what they know. `TaskQueue` orders waiting tasks
(`interactive` before `batch`, FIFO within a priority, O(1) enqueue, dequeue and
removal). `decide` applies the configured full-queue policy and returns a value:
`Admit` (possibly naming a victim to evict) or `Reject` with its reason.
"""

from __future__ import annotations

from orchestratord.admission.policy import (
    POLICIES,
    Admit,
    FullQueuePolicy,
    QueueLimits,
    Reject,
    decide,
)
from orchestratord.admission.queue import PRIORITIES, Priority, TaskQueue

__all__ = [
    "POLICIES",
    "PRIORITIES",
    "Admit",
    "FullQueuePolicy",
    "Priority",
    "QueueLimits",
    "Reject",
    "TaskQueue",
    "decide",
]
