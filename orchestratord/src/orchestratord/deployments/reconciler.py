"""How many pools each deployment should have now, and which to stop (pure; PLC-06).

`desired_replicas` reads the deployment, its pools and the demand for its model:

- at least `min_replicas`; a job waiting for a model with no pool at all asks for one
  (load on first request, `min_replicas: 0`);
- one more, up to `max_replicas`, when the queue holds at least `SCALE_UP_QUEUE_FACTOR`
  jobs per ready slot, every pool is ready, and the last scale-up is `SCALE_UP_COOLDOWN_S`
  ago (queue pressure);
- a pool idle (nothing running, nothing queued for it) for `idle_unload_after_ms` is
  released, down to `min_replicas`.

The decision is a value: the replica count to reach, and the pools to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestratord.deployments.model import DeploymentSpec

__all__ = [
    "SCALE_UP_COOLDOWN_S",
    "SCALE_UP_QUEUE_FACTOR",
    "Decision",
    "PoolFacts",
    "desired_replicas",
]

SCALE_UP_QUEUE_FACTOR = 2
SCALE_UP_COOLDOWN_S = 10.0


@dataclass(frozen=True, slots=True)
class PoolFacts:
    pool_id: str
    ready: bool
    failed: bool
    slots_total: int
    in_flight: int
    idle_since: float | None  # monotonic seconds; None while busy


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    stop: tuple[str, ...] = ()
    reason: str = ""


def desired_replicas(
    spec: DeploymentSpec,
    pools: Sequence[PoolFacts],
    pending: int,
    queued: int,
    now: float,
    last_scale_up: float,
) -> Decision:
    """Replicas to reach (counting `pending` preloads) and pools to stop."""
    live = [p for p in pools if not p.failed]
    current = len(live) + pending
    failed = tuple(p.pool_id for p in pools if p.failed)
    if current == 0 and queued:
        return Decision(max(1, spec.min_replicas), failed, "load on first request")
    ready = [p for p in live if p.ready]
    slots = sum(p.slots_total for p in ready)
    pressured = (
        bool(ready)
        and len(ready) == len(live)
        and not pending
        and queued >= SCALE_UP_QUEUE_FACTOR * max(1, slots)
    )
    if pressured and current < spec.max_replicas and now - last_scale_up >= SCALE_UP_COOLDOWN_S:
        return Decision(current + 1, failed, f"queue pressure: {queued} jobs for {slots} slots")
    target = min(max(current, spec.min_replicas), spec.max_replicas)
    stop = list(failed) + [
        p.pool_id
        for p in sorted(live, key=lambda p: p.pool_id, reverse=True)[: max(0, current - target)]
    ]
    idle = _idle_pools(spec, live, queued, now)
    for pool_id in idle:
        if target <= spec.min_replicas:
            break
        if pool_id not in stop:
            stop.append(pool_id)
            target -= 1
    reason = "idle" if idle and target < current else ""
    return Decision(target, tuple(stop), reason)


def _idle_pools(
    spec: DeploymentSpec, live: Sequence[PoolFacts], queued: int, now: float
) -> list[str]:
    limit = spec.idle_unload_after_ms
    if limit is None or queued:
        return []
    return [
        p.pool_id
        for p in sorted(live, key=lambda p: p.pool_id)
        if p.in_flight == 0 and p.idle_since is not None and (now - p.idle_since) * 1000.0 >= limit
    ]
