"""Control-link wire messages -> registry values (the edge translator, STYLE rule 9)."""

from __future__ import annotations

from specs.control.v1 import control_pb2 as pb

from orchestratord.registry import (
    DeviceInfo,
    HostInventory,
    ModelFileInfo,
    PoolInfo,
    ReplicaInfo,
)

__all__ = ["inventory_from_wire", "pool_from_wire"]


def _model_from_wire(wire: pb.ModelFile) -> ModelFileInfo:
    return ModelFileInfo(
        id=wire.id,
        ref=wire.ref,
        sha256=wire.sha256,
        size_bytes=wire.size_bytes,
        aliases=tuple(wire.aliases),
        architecture=wire.architecture,
        trained_context=wire.trained_context,
        weight_bytes=wire.weight_bytes,
        block_count=wire.block_count,
        embedding_length=wire.embedding_length,
        head_count=wire.head_count,
        head_count_kv=wire.head_count_kv,
        key_length=wire.key_length,
        value_length=wire.value_length,
        feed_forward_length=wire.feed_forward_length,
        vocab_size=wire.vocab_size,
        sliding_window=wire.sliding_window,
        swa_layers=tuple(wire.swa_layers),
        layer_kv_heads=tuple(wire.layer_kv_heads),
    )


def inventory_from_wire(wire: pb.Inventory) -> HostInventory:
    devices = tuple(
        DeviceInfo(
            d.id,
            d.kind,
            d.name,
            d.memory_total_bytes,
            d.memory_free_bytes,
            d.compute_capability,
            d.simulated,
            d.cordoned,
            tuple((p.pid, p.memory_bytes) for p in d.foreign_processes),
        )
        for d in wire.devices
    )
    return HostInventory(
        devices=devices,
        engines=frozenset(wire.engines),
        models=tuple(_model_from_wire(m) for m in wire.models),
        cpu_cores=wire.cpu_cores,
        ram_total_bytes=wire.ram_total_bytes,
        ram_free_bytes=wire.ram_free_bytes,
    )


def pool_from_wire(host_id: str, wire: pb.PoolStatus) -> PoolInfo:
    replicas = tuple(
        ReplicaInfo(
            index=r.index,
            endpoint=r.endpoint,
            ready=r.ready,
            slots_total=r.slots_total,
            incarnation=r.incarnation,
            api_key=r.api_key,
            tls=r.tls,
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
        device=wire.device,
        deployment=wire.deployment,
        memory_estimated_bytes=wire.memory_estimated_bytes,
        memory_actual_bytes=wire.memory_actual_bytes,
        load_progress=wire.load_progress if wire.HasField("load_progress") else None,
    )
