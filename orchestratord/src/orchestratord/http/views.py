"""How hosts and pools read on the wire: `GET /v2/hosts`, `GET /v2/pools` and the status
snapshot (`http.status`) render them with these functions, so they always agree.
Engine credentials (a replica's `api_key`) never appear (SEC-04)."""

from __future__ import annotations

from orchestratord.registry import HostInfo, PoolInfo, PoolRegistry

__all__ = ["host_json", "pool_json"]


def pool_json(registry: PoolRegistry, pool: PoolInfo, now: float) -> dict[str, object]:
    view = next((v for v in registry.views(now) if v.pool_id == pool.pool_id), None)
    return {
        "pool_id": pool.pool_id,
        "host_id": pool.host_id,
        "state": pool.state,
        "live": registry.pool_live(pool.pool_id, now),
        "ready": pool.ready,
        "draining": pool.draining,
        "engine": pool.engine,
        "engine_version": pool.engine_version,
        "model_id": pool.model_id,
        "model_digest": pool.model_digest,
        "model_aliases": sorted(pool.model_aliases),
        "ctx": pool.ctx,
        "slots_total": pool.slots_total,
        "slots_free": view.slots_free if view is not None else 0,
        "in_flight": registry.in_flight(pool.pool_id),
        "last_error": pool.last_error,
        "restarts": pool.restarts,
        "load_progress": None if pool.load_progress is None else round(pool.load_progress, 4),
        "replicas": [
            {
                "index": r.index,
                "ready": r.ready,
                "slots_total": r.slots_total,
                "endpoint": r.endpoint,
            }
            for r in pool.replicas
        ],
    }


def host_json(registry: PoolRegistry, host: HostInfo, now: float) -> dict[str, object]:
    inventory = host.inventory
    return {
        "host_id": host.host_id,
        "live": registry.host_live(host.host_id, now),
        "cordoned": host.cordoned,
        "lost_reason": host.lost_reason,
        "address": host.address,
        "link": host.link,
        "last_snapshot_age_ms": round((now - host.last_seen) * 1000.0),
        "refused_pools": [
            {"pool_id": pool_id, "reason": reason}
            for pool_id, reason in sorted(host.refused.items())
        ],
        "devices": [
            {
                "id": d.id,
                "kind": d.kind,
                "name": d.name,
                "memory_total_bytes": d.memory_total_bytes,
                "memory_free_bytes": d.memory_free_bytes,
                "compute_capability": d.compute_capability,
                "simulated": d.simulated,
                "cordoned": d.cordoned,
                "foreign_processes": [
                    {"pid": pid, "memory_bytes": used} for pid, used in d.foreign_processes
                ],
            }
            for d in inventory.devices
        ],
        "engines": sorted(inventory.engines),
        "models": sorted(m.id for m in inventory.models),
        "pools": sorted(host.pools),
    }
