"""The placement pipeline, assembled in one place with the reason for its order.

Checks run in the order of `CHECKS`; a pool is rejected by the first check it fails,
so each rejection names the most basic reason. Scorers then rank the survivors; the
final tie-break is the pool id, so the same inputs always give the same decision
(PLC-03). Scorers, most important first (each compared only when the previous tie):

1. `preferred` — the job listed the pool in `prefer_pools`;
2. `session` — the pool holds the job's session warm (its KV cache has the conversation);
3. `predicted_ms` — predicted finish time: prefill of the prompt tokens the pool has not
   cached (its prefix index) at its measured prefill rate, shared with the sequences
   already running there (a pool with `b` busy slots prefills at 1/(1+b) of its rate:
   prompt evaluation is compute-bound and the running decodes take their turns), plus
   `max_tokens` at its measured decode rate (measured under the pool's usual
   concurrency, so it is not scaled again). Pools without measurements are predicted
   from the others' average, so a new pool is neither favoured nor starved;
4. `free_slots` — the most free slots (spreads load across pools);
5. pool id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from orchestratord.placement import checks
from orchestratord.placement.checks import Check
from orchestratord.placement.model import JobNeeds, Placed, PoolView, Rejection, Unplaceable

__all__ = [
    "CHECKS",
    "STATIC_CHECKS",
    "CycleViews",
    "assume",
    "cached_chunks",
    "feasible_ever",
    "place",
]

STATIC_CHECKS: tuple[tuple[str, Check], ...] = (
    # Overrides first: they are set lookups and say the most about why a pool was skipped.
    ("avoid", checks.avoid),
    ("pin", checks.pin),
    ("prefer_only", checks.prefer_only),
    # What the pool is: model, digest, engine, features, the request parameters its
    # engine kind honours, context. Fixed for a pool's life. What it can do comes before
    # how much it holds: a pool that cannot honour a field is refused for that (naming
    # the field), not for a prompt that field's own text made too long.
    ("model", checks.model),
    ("digest", checks.digest),
    ("engine", checks.engine),
    ("features", checks.features),
    ("params", checks.params),
    ("context", checks.context),
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


def cached_chunks(needs: JobNeeds, pool: PoolView) -> int:
    """Leading prompt chunks the pool has served recently (a prefix-cache hit estimate)."""
    hits = 0
    for key in needs.prefix_keys:
        if key not in pool.prefix_keys:
            break
        hits += 1
    return hits


def _predicted_ms(
    needs: JobNeeds, pool: PoolView, prefill_rate: float, decode_rate: float
) -> float:
    chunks = len(needs.prefix_keys)
    prompt_tokens = max(0, needs.tokens - needs.max_tokens)
    uncached = (
        prompt_tokens * (1.0 - cached_chunks(needs, pool) / chunks) if chunks else prompt_tokens
    )
    prefill = pool.prefill_tokens_per_s or prefill_rate
    decode = pool.decode_tokens_per_s or decode_rate
    busy = sum(r.slots_total - r.slots_free for r in pool.replicas if r.ready)
    return 1000.0 * (uncached * (1 + busy) / prefill + needs.max_tokens / decode)


def _fallback_rates(pools: Sequence[PoolView]) -> tuple[float, float]:
    prefill = [p.prefill_tokens_per_s for p in pools if p.prefill_tokens_per_s > 0]
    decode = [p.decode_tokens_per_s for p in pools if p.decode_tokens_per_s > 0]
    return (
        sum(prefill) / len(prefill) if prefill else 1000.0,
        sum(decode) / len(decode) if decode else 50.0,
    )


def _score(
    needs: JobNeeds, pool: PoolView, rates: tuple[float, float]
) -> tuple[tuple[str, float], ...]:
    """Named scores, higher is better (predicted time is negated)."""
    return (
        ("preferred", 1.0 if pool.pool_id in needs.overrides.prefer_pools else 0.0),
        ("session", 1.0 if needs.session_pool == pool.pool_id else 0.0),
        ("predicted_ms", -round(_predicted_ms(needs, pool, *rates), 3)),
        ("free_slots", float(pool.slots_free)),
    )


def place(needs: JobNeeds, pools: Sequence[PoolView]) -> Placed | Unplaceable:
    """Choose a pool and replica for the job, or say why none can take it now."""
    rejections: list[Rejection] = []
    best: tuple[tuple[float, ...], str, PoolView, tuple[tuple[str, float], ...]] | None = None
    rates = _fallback_rates(pools)
    for pool in pools:
        rejection = _first_failure(needs, pool, CHECKS)
        if rejection is not None:
            rejections.append(rejection)
            continue
        scores = _score(needs, pool, rates)
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


class CycleViews:
    """The pools of one dispatch cycle, indexed by the model names they answer to.

    A cycle places many queued jobs against the same pools; scanning every pool for every
    job made one cycle over 10,000 jobs and 1,000 pools take ~20 s (bench/placement_scale).
    Only pools serving the job's model can pass the `model` check, so `candidates` hands
    `place` just those (the decision is the same: the others would be rejected by it).
    `take` records a placement (the slot is reserved before the bind) and `free_slots`
    says when nothing more can be placed this cycle.
    """

    def __init__(self, pools: Sequence[PoolView]) -> None:
        self._pools = {pool.pool_id: pool for pool in pools}
        self._serving: dict[str, list[str]] = {}
        for pool in pools:
            for name in {pool.model_id, *pool.model_aliases}:
                self._serving.setdefault(name, []).append(pool.pool_id)
        self.free_slots = sum(pool.slots_free for pool in pools)

    def candidates(self, model: str) -> tuple[PoolView, ...]:
        return tuple(self._pools[pool_id] for pool_id in self._serving.get(model, ()))

    def take(self, placed: Placed) -> None:
        (self._pools[placed.pool_id],) = assume((self._pools[placed.pool_id],), placed)
        self.free_slots -= 1
