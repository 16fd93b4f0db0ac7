"""Request placement: job -> ready pool (pure; PLC-01..03, PLC-05).

`place(needs, pools)` runs the feasibility checks in the order assembled in
`pipeline.CHECKS`, scores the survivors, and returns `Placed` (pool, replica, scores)
or `Unplaceable` with one `Rejection` per pool (check, wanted, available). `assume`
returns the pool views with the chosen slot taken, so several placements in one
dispatch cycle see each other; `CycleViews` does the same for a whole cycle, handing
`place` only the pools that serve the job's model. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from orchestratord.placement.model import (
    JobNeeds,
    Overrides,
    Placed,
    PoolView,
    Rejection,
    ReplicaView,
    Unplaceable,
)
from orchestratord.placement.pipeline import (
    CHECKS,
    STATIC_CHECKS,
    CycleViews,
    assume,
    feasible_ever,
    place,
)

__all__ = [
    "CHECKS",
    "STATIC_CHECKS",
    "CycleViews",
    "JobNeeds",
    "Overrides",
    "Placed",
    "PoolView",
    "Rejection",
    "ReplicaView",
    "Unplaceable",
    "assume",
    "feasible_ever",
    "place",
]
