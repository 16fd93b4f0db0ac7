"""Values placement works on: immutable pool views, what a job needs, and decisions."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

__all__ = ["JobNeeds", "Overrides", "Placed", "PoolView", "Rejection", "ReplicaView", "Unplaceable"]


@dataclass(frozen=True, slots=True)
class ReplicaView:
    index: int
    ready: bool
    slots_total: int
    slots_free: int


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool as placement sees it in this cycle. `lease_fresh` is decided by the caller."""

    pool_id: str
    host_id: str
    engine: str
    model_id: str
    model_aliases: frozenset[str]
    model_digest: str
    ctx: int
    features: frozenset[str]
    ready: bool
    draining: bool
    lease_fresh: bool
    replicas: tuple[ReplicaView, ...]
    # Measured (decayed averages); 0 when nothing was measured yet.
    decode_tokens_per_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    # Hashes of prompt prefixes this pool served recently (its prompt cache, approximately):
    # a set, or the live key view of the orchestrator's index (read within one cycle).
    prefix_keys: AbstractSet[int] = field(default=frozenset(), hash=False, compare=False)

    @property
    def slots_total(self) -> int:
        return sum(r.slots_total for r in self.replicas)

    @property
    def slots_free(self) -> int:
        return sum(r.slots_free for r in self.replicas if r.ready)

    def serves(self, model: str) -> bool:
        return model == self.model_id or model in self.model_aliases


@dataclass(frozen=True, slots=True)
class Overrides:
    pin_pool_id: str | None = None
    prefer_pools: frozenset[str] = frozenset()
    avoid_pools: frozenset[str] = frozenset()
    allow_fallback: bool = True


@dataclass(frozen=True, slots=True)
class JobNeeds:
    """What a job needs from a pool. `tokens` = prompt tokens (upper bound) + max_tokens.

    `workload` and `params` (the request parameters it sets, named as in the
    capability matrix `worker_adapters.capabilities`) are checked against each pool's
    engine kind; `session_pool` is the pool whose KV cache is warm for the job's session;
    `prefix_keys` are cumulative hashes of the prompt's leading chunks
    (`PREFIX_CHUNK_BYTES` each), matched against the pools' `prefix_keys`.
    """

    model: str
    tokens: int
    features: frozenset[str] = frozenset()
    workload: str = "completion"
    params: frozenset[str] = frozenset()
    digest: str | None = None
    engine: str | None = None
    overrides: Overrides = field(default_factory=Overrides)
    max_tokens: int = 0
    session_pool: str | None = None
    prefix_keys: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    pool_id: str
    check: str
    wanted: str
    available: str

    @property
    def reason(self) -> str:
        return f"{self.check}: wanted {self.wanted}, available {self.available}"


@dataclass(frozen=True, slots=True)
class Placed:
    pool_id: str
    replica: int
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """No pool can take the job now. `transient`: some pool could, once it has capacity."""

    rejections: tuple[Rejection, ...]
    transient: bool

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for rejection in self.rejections:
            found[rejection.check] = found.get(rejection.check, 0) + 1
        return found
