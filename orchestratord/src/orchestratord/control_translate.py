"""Control-link wire messages -> registry values (the edge translator, STYLE rule 9)."""

from __future__ import annotations

from specs.control.v1 import control_pb2 as pb

from orchestratord.registry import PoolInfo, ReplicaInfo

__all__ = ["pool_from_wire"]


def pool_from_wire(host_id: str, wire: pb.PoolStatus) -> PoolInfo:
    replicas = tuple(
        ReplicaInfo(
            index=r.index,
            endpoint=r.endpoint,
            ready=r.ready,
            slots_total=r.slots_total,
            incarnation=r.incarnation,
            api_key=r.api_key,
        )
        for r in wire.replicas
    )
    return PoolInfo(
        pool_id=wire.pool_id,
        host_id=host_id,
        state=wire.state,
        ready=wire.ready,
        draining=wire.draining,
        engine=wire.engine,
        engine_version=wire.engine_version,
        adapter=wire.adapter,
        model_id=wire.model_id,
        model_digest=wire.model_digest,
        model_aliases=frozenset(wire.model_aliases),
        ctx=wire.ctx,
        slots_total=wire.slots_total,
        features=frozenset(wire.features),
        replicas=replicas,
        last_error=wire.last_error,
        restarts=wire.restarts,
    )
