"""Feasibility checks: one small function per rule, each with a name (PLC-01, PLC-02).

A check returns None when the pool passes, else `(wanted, available)` for the
`Rejection`. Static checks depend only on the job and the pool's configuration (a job
failing them on every pool can never run); dynamic checks depend on the pool's state
now (readiness, lease, free slots), so a job failing only them waits.
"""

from __future__ import annotations

from collections.abc import Callable

from worker_adapters.capabilities import honoured, unsupported_params

from orchestratord.placement.model import JobNeeds, PoolView

__all__ = ["Check", "Outcome"]

Outcome = tuple[str, str] | None
Check = Callable[[JobNeeds, PoolView], Outcome]


def avoid(needs: JobNeeds, pool: PoolView) -> Outcome:
    if pool.pool_id in needs.overrides.avoid_pools:
        return ("a pool not in avoid_pools", "avoided")
    return None


def pin(needs: JobNeeds, pool: PoolView) -> Outcome:
    pinned = needs.overrides.pin_pool_id
    if pinned is not None and pool.pool_id != pinned:
        return (f"pool {pinned}", pool.pool_id)
    return None


def prefer_only(needs: JobNeeds, pool: PoolView) -> Outcome:
    overrides = needs.overrides
    restricted = overrides.prefer_pools and not overrides.allow_fallback
    if restricted and pool.pool_id not in overrides.prefer_pools:
        return ("one of prefer_pools (allow_fallback false)", pool.pool_id)
    return None


def model(needs: JobNeeds, pool: PoolView) -> Outcome:
    if not pool.serves(needs.model):
        return (needs.model, pool.model_id)
    return None


def digest(needs: JobNeeds, pool: PoolView) -> Outcome:
    if needs.digest is not None and needs.digest != pool.model_digest:
        return (needs.digest, pool.model_digest)
    return None


def engine(needs: JobNeeds, pool: PoolView) -> Outcome:
    if needs.engine is not None and needs.engine != pool.engine:
        return (needs.engine, pool.engine)
    return None


def context(needs: JobNeeds, pool: PoolView) -> Outcome:
    if needs.tokens > pool.ctx:
        return (f"{needs.tokens} tokens", f"{pool.ctx} tokens")
    return None


def features(needs: JobNeeds, pool: PoolView) -> Outcome:
    missing = needs.features - pool.features
    if missing:
        return (",".join(sorted(needs.features)), ",".join(sorted(pool.features)) or "none")
    return None


def params(needs: JobNeeds, pool: PoolView) -> Outcome:
    """Every request parameter the job sets is honoured by the pool's engine kind on the
    job's workload (API-16; the capability matrix). `wanted`: the parameters it lacks."""
    missing = unsupported_params(pool.engine, needs.workload, needs.params)
    if missing:
        available = ",".join(sorted(honoured(pool.engine, needs.workload))) or "none"
        return (",".join(missing), f"{pool.engine} honours {available}")
    return None


def lease(needs: JobNeeds, pool: PoolView) -> Outcome:
    return None if pool.lease_fresh else ("a fresh lease", "lease expired")


def ready(needs: JobNeeds, pool: PoolView) -> Outcome:
    return None if pool.ready and any(r.ready for r in pool.replicas) else ("ready", "not ready")


def draining(needs: JobNeeds, pool: PoolView) -> Outcome:
    return ("not draining", "draining") if pool.draining else None


def slots(needs: JobNeeds, pool: PoolView) -> Outcome:
    free = pool.slots_free
    return None if free > 0 else ("1 free slot", f"{free} of {pool.slots_total}")
