"""`PoolRegistry`: what the orchestrator knows about hosts and pools.

Fed level-triggered by the control link (the latest snapshot of a host replaces what
was known about it) and read by admission and the dispatcher through `views(now)`,
immutable `PoolView`s for placement. It also holds the orchestrator's own slot
accounting: a slot is reserved when a job is placed and released when its stream ends,
so free slots never wait for the next snapshot.

Liveness: a host whose control stream breaks, or whose last snapshot is older than the
lease, is lost and its pools are not offered. A replica whose engine was seen to die
(`mark_suspect`) is not offered until a snapshot shows a new incarnation of it or the
suspicion expires. Time is passed in (`now`, monotonic seconds). Lives on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from orchestratord.placement import PoolView, ReplicaView

__all__ = [
    "DeviceInfo",
    "HostInfo",
    "HostInventory",
    "ModelFileInfo",
    "PoolInfo",
    "PoolRegistry",
    "ReplicaInfo",
]


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    index: int
    endpoint: str
    ready: bool
    slots_total: int
    incarnation: int
    api_key: str = field(default="", repr=False)
    tls: bool = False  # the engine serves TLS (FLT-02)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    kind: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    compute_capability: str = ""
    simulated: bool = False
    cordoned: bool = False
    foreign_processes: tuple[tuple[int, int], ...] = ()  # (pid, GPU memory bytes), NVML


@dataclass(frozen=True, slots=True)
class ModelFileInfo:
    """A model file a host holds; satisfies catalog_core's `ModelShape` for estimates."""

    id: str
    ref: str
    sha256: str
    size_bytes: int
    aliases: tuple[str, ...]
    architecture: str
    trained_context: int
    weight_bytes: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    feed_forward_length: int
    vocab_size: int
    sliding_window: int
    swa_layers: tuple[bool, ...]
    layer_kv_heads: tuple[int, ...]

    def names(self) -> frozenset[str]:
        return frozenset({self.id, self.ref, self.sha256, *self.aliases})


@dataclass(frozen=True, slots=True)
class HostInventory:
    devices: tuple[DeviceInfo, ...] = ()
    engines: frozenset[str] = frozenset()
    models: tuple[ModelFileInfo, ...] = ()
    cpu_cores: int = 0
    ram_total_bytes: int = 0
    ram_free_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PoolInfo:
    pool_id: str
    host_id: str
    state: str
    ready: bool
    draining: bool
    engine: str
    engine_version: str
    adapter: str
    model_id: str
    model_digest: str
    model_aliases: frozenset[str]
    ctx: int
    slots_total: int
    features: frozenset[str]
    replicas: tuple[ReplicaInfo, ...]
    last_error: str = ""
    restarts: int = 0
    device: str = ""
    deployment: str = ""
    memory_estimated_bytes: int = 0
    memory_actual_bytes: int = 0
    load_progress: float | None = None  # while a replica loads: the fraction loaded


@dataclass(slots=True)
class HostInfo:
    host_id: str
    connected: bool
    last_seen: float
    inventory: HostInventory = field(default_factory=HostInventory)
    cordoned: bool = False
    pools: dict[str, PoolInfo] = field(default_factory=dict)
    lost_reason: str = ""
    address: str = ""  # the control link's peer address, as seen here
    link: str = ""  # plaintext | tls | mtls
    refused: dict[str, str] = field(default_factory=dict)  # pool_id -> why it is not offered


class PoolRegistry:
    def __init__(
        self,
        *,
        lease_s: float,
        suspect_ttl_s: float,
        on_change: Callable[[], None] = lambda: None,
        on_slot_freed: Callable[[], None] | None = None,
        on_host_lost: Callable[[str, str], None] = lambda host_id, reason: None,
    ) -> None:
        """`on_change` runs when hosts, pools or replicas change; `on_slot_freed` (default:
        `on_change`) when a reserved slot is released, which changes nothing else;
        `on_host_lost(host_id, reason)` when a live host is lost."""
        self._lease_s = lease_s
        self._suspect_ttl_s = suspect_ttl_s
        self._on_change = on_change
        self._on_slot_freed = on_slot_freed or on_change
        self._on_host_lost = on_host_lost
        self._hosts: dict[str, HostInfo] = {}
        self._owner: dict[str, str] = {}  # pool_id -> host_id
        self._reserved: dict[tuple[str, int], int] = {}
        self._suspect: dict[tuple[str, int], tuple[int, float]] = {}

    # -- hosts -------------------------------------------------------------------------

    def host_connected(
        self, host_id: str, now: float, inventory: HostInventory, cordoned: bool = False
    ) -> None:
        host = self._hosts.setdefault(host_id, HostInfo(host_id, True, now))
        host.connected, host.last_seen, host.lost_reason = True, now, ""
        host.inventory, host.cordoned = inventory, cordoned
        self._on_change()

    def host_inventory(self, host_id: str, inventory: HostInventory, cordoned: bool) -> None:
        host = self._hosts.get(host_id)
        if host is not None:
            host.inventory, host.cordoned = inventory, cordoned

    def host_link(self, host_id: str, address: str, link: str) -> None:
        host = self._hosts.get(host_id)
        if host is not None:
            host.address, host.link = address, link

    def host_refusals(self, host_id: str, refused: dict[str, str]) -> None:
        host = self._hosts.get(host_id)
        if host is not None:
            host.refused = dict(refused)

    def mark_draining(self, pool_id: str) -> None:
        """Stop offering a pool at once, before its manager's next snapshot says so."""
        host_id = self._owner.get(pool_id)
        if host_id is not None and pool_id in self._hosts[host_id].pools:
            pools = self._hosts[host_id].pools
            pools[pool_id] = replace(pools[pool_id], draining=True, ready=False)
            self._on_change()

    def set_cordon(self, host_id: str, cordoned: bool, device: str = "") -> None:
        """Apply a cordon at once, before the host's next snapshot confirms it."""
        host = self._hosts.get(host_id)
        if host is None:
            return
        if not device:
            host.cordoned = cordoned
            return
        devices = tuple(
            replace(d, cordoned=cordoned) if d.id == device else d for d in host.inventory.devices
        )
        host.inventory = replace(host.inventory, devices=devices)

    def host(self, host_id: str) -> HostInfo | None:
        return self._hosts.get(host_id)

    def host_live(self, host_id: str, now: float) -> bool:
        host = self._hosts.get(host_id)
        return host is not None and host.connected and now - host.last_seen <= self._lease_s

    def host_snapshot(self, host_id: str, pools: Iterable[PoolInfo], now: float) -> list[str]:
        """Replace the host's pools; returns pool ids refused because another host owns them."""
        host = self._hosts.setdefault(host_id, HostInfo(host_id, True, now))
        host.connected, host.last_seen, host.lost_reason = True, now, ""
        refused, fresh = [], {}
        for pool in pools:
            owner = self._owner.get(pool.pool_id)
            if owner is not None and owner != host_id and self._hosts[owner].connected:
                refused.append(pool.pool_id)
                continue
            self._owner[pool.pool_id] = host_id
            fresh[pool.pool_id] = pool
            self._clear_suspicion(pool)
        for gone in set(host.pools) - set(fresh):
            self._owner.pop(gone, None)
        host.pools = fresh
        self._on_change()
        return refused

    def host_lost(self, host_id: str, reason: str) -> None:
        host = self._hosts.get(host_id)
        if host is None or not host.connected:
            return
        host.connected, host.lost_reason = False, reason
        self._on_change()
        self._on_host_lost(host_id, reason)

    def expire(self, now: float) -> list[str]:
        """Mark hosts whose lease ran out as lost; returns their ids."""
        expired = [
            h.host_id
            for h in self._hosts.values()
            if h.connected and now - h.last_seen > self._lease_s
        ]
        for host_id in expired:
            self.host_lost(host_id, "lease expired: no snapshot within the lease")
        return expired

    def hosts(self) -> list[HostInfo]:
        return sorted(self._hosts.values(), key=lambda h: h.host_id)

    # -- pools -------------------------------------------------------------------------

    def pool(self, pool_id: str) -> PoolInfo | None:
        host_id = self._owner.get(pool_id)
        return None if host_id is None else self._hosts[host_id].pools.get(pool_id)

    def pools(self) -> list[PoolInfo]:
        return sorted(
            (p for h in self._hosts.values() for p in h.pools.values()), key=lambda p: p.pool_id
        )

    def pool_live(self, pool_id: str, now: float) -> bool:
        host_id = self._owner.get(pool_id)
        if host_id is None:
            return False
        host = self._hosts[host_id]
        return host.connected and now - host.last_seen <= self._lease_s

    def replica(self, pool_id: str, index: int) -> ReplicaInfo | None:
        pool = self.pool(pool_id)
        if pool is None:
            return None
        return next((r for r in pool.replicas if r.index == index), None)

    def views(self, now: float) -> tuple[PoolView, ...]:
        return tuple(self._view(h, p, now) for h in self._hosts.values() for p in h.pools.values())

    def _view(self, host: HostInfo, pool: PoolInfo, now: float) -> PoolView:
        replicas = tuple(
            ReplicaView(
                index=r.index,
                ready=r.ready and not self._is_suspect(pool.pool_id, r, now),
                slots_total=r.slots_total,
                slots_free=max(0, r.slots_total - self._reserved.get((pool.pool_id, r.index), 0)),
            )
            for r in pool.replicas
        )
        return PoolView(
            pool_id=pool.pool_id,
            host_id=host.host_id,
            engine=pool.engine,
            model_id=pool.model_id,
            model_aliases=pool.model_aliases,
            model_digest=pool.model_digest,
            ctx=pool.ctx,
            features=pool.features,
            ready=pool.ready,
            draining=pool.draining,
            lease_fresh=host.connected and now - host.last_seen <= self._lease_s,
            replicas=replicas,
        )

    # -- slot accounting and suspicion ---------------------------------------------------

    def reserve(self, pool_id: str, replica: int) -> None:
        key = (pool_id, replica)
        self._reserved[key] = self._reserved.get(key, 0) + 1

    def release(self, pool_id: str, replica: int) -> None:
        key = (pool_id, replica)
        left = self._reserved.get(key, 0) - 1
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)
        self._on_slot_freed()

    def in_flight(self, pool_id: str) -> int:
        return sum(n for (p, _), n in self._reserved.items() if p == pool_id)

    def mark_suspect(self, pool_id: str, replica: int, now: float) -> None:
        info = self.replica(pool_id, replica)
        if info is not None:
            self._suspect[(pool_id, replica)] = (info.incarnation, now + self._suspect_ttl_s)

    def _is_suspect(self, pool_id: str, replica: ReplicaInfo, now: float) -> bool:
        mark = self._suspect.get((pool_id, replica.index))
        if mark is None:
            return False
        incarnation, until = mark
        return replica.incarnation == incarnation and now < until

    def _clear_suspicion(self, pool: PoolInfo) -> None:
        for replica in pool.replicas:
            mark = self._suspect.get((pool.pool_id, replica.index))
            if mark is not None and mark[0] != replica.incarnation:
                del self._suspect[(pool.pool_id, replica.index)]
