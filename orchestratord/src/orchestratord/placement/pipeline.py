"""The placement pipeline, assembled in one place with the reason for its order.

Checks run in the order of `CHECKS`; a pool is rejected by the first check it fails,
so each rejection names the most basic reason. Scorers then rank the survivors; the
final tie-break is the pool id, so the same inputs always give the same decision
(PLC-03). Scoring in this version: preferred pools first, then the most free slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from orchestratord.placement import checks
from orchestratord.placement.checks import Check
from orchestratord.placement.model import JobNeeds, Placed, PoolView, Rejection, Unplaceable

__all__ = ["CHECKS", "STATIC_CHECKS", "assume", "feasible_ever", "place"]

STATIC_CHECKS: tuple[tuple[str, Check], ...] = (
    # Overrides first: they are set lookups and say the most about why a pool was skipped.
    ("avoid", checks.avoid),
    ("pin", checks.pin),
    ("prefer_only", checks.prefer_only),
    # What the pool is: model, digest, engine, context, features. Fixed for a pool's life.
    ("model", checks.model),
    ("digest", checks.digest),
    ("engine", checks.engine),
    ("context", checks.context),
    ("features", checks.features),
)
DYNAMIC_CHECKS: tuple[tuple[str, Check], ...] = (
    # What the pool is doing now; a job that fails only these waits in the queue.
    ("lease", checks.lease),
    ("ready", checks.ready),
    ("draining", checks.draining),
    # Capacity last: the only check that changes on every dispatch.
    ("slots", checks.slots),
)
CHECKS = STATIC_CHECKS + DYNAMIC_CHECKS
_STATIC_NAMES = frozenset(name for name, _ in STATIC_CHECKS)


def _first_failure(
    needs: JobNeeds, pool: PoolView, stages: tuple[tuple[str, Check], ...]
) -> Rejection | None:
    for name, check in stages:
        outcome = check(needs, pool)
        if outcome is not None:
            return Rejection(pool.pool_id, name, *outcome)
    return None


def _score(needs: JobNeeds, pool: PoolView) -> tuple[tuple[str, float], ...]:
    preferred = 1.0 if pool.pool_id in needs.overrides.prefer_pools else 0.0
    free_ratio = pool.slots_free / pool.slots_total if pool.slots_total else 0.0
    return (
        ("preferred", preferred),
        ("free_slots", float(pool.slots_free)),
        ("free_ratio", free_ratio),
    )


def place(needs: JobNeeds, pools: Sequence[PoolView]) -> Placed | Unplaceable:
    """Choose a pool and replica for the job, or say why none can take it now."""
    rejections: list[Rejection] = []
    best: tuple[tuple[float, ...], str, PoolView, tuple[tuple[str, float], ...]] | None = None
    for pool in pools:
        rejection = _first_failure(needs, pool, CHECKS)
        if rejection is not None:
            rejections.append(rejection)
            continue
        scores = _score(needs, pool)
        key = tuple(-value for _, value in scores)
        if best is None or (key, pool.pool_id) < (best[0], best[1]):
            best = (key, pool.pool_id, pool, scores)
    if best is None:
        transient = any(r.check not in _STATIC_NAMES for r in rejections)
        return Unplaceable(tuple(rejections), transient)
    pool = best[2]
    replica = min(
        (r for r in pool.replicas if r.ready and r.slots_free > 0),
        key=lambda r: (-r.slots_free, r.index),
    )
    return Placed(pool.pool_id, replica.index, best[3])


def feasible_ever(needs: JobNeeds, pools: Sequence[PoolView]) -> Unplaceable | None:
    """None when some pool passes every static check; else why none does (ADM-03)."""
    rejections = []
    for pool in pools:
        rejection = _first_failure(needs, pool, STATIC_CHECKS)
        if rejection is None:
            return None
        rejections.append(rejection)
    return Unplaceable(tuple(rejections), transient=False)


def assume(pools: Sequence[PoolView], placed: Placed) -> tuple[PoolView, ...]:
    """The pools with the placed slot taken (reserve before bind, within one cycle)."""
    updated = []
    for pool in pools:
        if pool.pool_id == placed.pool_id:
            replicas = tuple(
                replace(r, slots_free=r.slots_free - 1) if r.index == placed.replica else r
                for r in pool.replicas
            )
            pool = replace(pool, replicas=replicas)
        updated.append(pool)
    return tuple(updated)
