"""`TaskQueue`: waiting task ids in priority lanes (ADM-01).

Each lane is an insertion-ordered dict, so enqueue, dequeue, removal by id, and putting
a task back at the head of its lane (a retry keeps its turn) are all O(1). Iteration
yields `interactive` tasks first, then `batch`, FIFO within each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Literal

__all__ = ["PRIORITIES", "Priority", "TaskQueue"]

Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


class TaskQueue:
    __slots__ = ("_lanes", "_where")

    def __init__(self) -> None:
        self._lanes: dict[Priority, OrderedDict[str, None]] = {p: OrderedDict() for p in PRIORITIES}
        self._where: dict[str, Priority] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._where

    def lane_length(self, priority: Priority) -> int:
        return len(self._lanes[priority])

    def push(self, task_id: str, priority: Priority, *, front: bool = False) -> int:
        """Enqueue; returns the number of tasks that will dequeue before this one."""
        if task_id in self._where:
            raise ValueError(f"task {task_id} is already queued")
        lane = self._lanes[priority]
        lane[task_id] = None
        self._where[task_id] = priority
        if front:
            lane.move_to_end(task_id, last=False)
            return self._ahead_of_lane(priority)
        return self._ahead_of_lane(priority) + len(lane) - 1

    def remove(self, task_id: str) -> bool:
        priority = self._where.pop(task_id, None)
        if priority is None:
            return False
        del self._lanes[priority][task_id]
        return True

    def oldest(self, priority: Priority) -> str | None:
        lane = self._lanes[priority]
        return next(iter(lane), None)

    def position(self, task_id: str) -> int:
        """Tasks ahead of `task_id` (O(n): for status queries, not the hot path)."""
        priority = self._where[task_id]
        for index, queued in enumerate(self._lanes[priority]):
            if queued == task_id:
                return self._ahead_of_lane(priority) + index
        raise KeyError(task_id)

    def __iter__(self) -> Iterator[str]:
        """All waiting ids in dequeue order. Do not mutate the queue while iterating."""
        for priority in PRIORITIES:
            yield from self._lanes[priority]

    def _ahead_of_lane(self, priority: Priority) -> int:
        ahead = 0
        for other in PRIORITIES:
            if other == priority:
                return ahead
            ahead += len(self._lanes[other])
        return ahead
