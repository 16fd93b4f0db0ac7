"""Whether a model can be served at all soon (pure; SEC-03, issue 11).

A job for a model whose every pool is failed, stopped or draining would only wait in the
queue for `max_queue_wait_ms` and then fail: it is refused at once, retriable, with the
pools' states as the reason. Pools that are provisioning, starting, loading or backing
off between restarts will serve soon: their jobs are queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PoolState", "unavailable"]

_GONE = frozenset({"failed", "stopped", "draining"})


@dataclass(frozen=True, slots=True)
class PoolState:
    pool_id: str
    state: str
    draining: bool
    last_error: str = ""


def unavailable(pools: Sequence[PoolState]) -> str | None:
    """Why none of `pools` (those serving a model) will take work soon, or None."""
    if not pools or any(p.state not in _GONE and not p.draining for p in pools):
        return None
    parts = []
    for pool in pools:
        state = "draining" if pool.draining else pool.state
        parts.append(
            f"{pool.pool_id}: {state}" + (f" ({pool.last_error})" if pool.last_error else "")
        )
    return "; ".join(parts)
