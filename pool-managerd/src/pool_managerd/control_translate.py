"""Pool, model and inventory values -> control-link wire messages (the edge translator)."""

from __future__ import annotations

from specs.control.v1 import control_pb2 as pb

from pool_managerd.inventory import Inventory
from pool_managerd.models import LocalModel
from pool_managerd.pool import PoolStatus

__all__ = ["inventory_to_wire", "pool_to_wire"]


def _model_to_wire(model: LocalModel) -> pb.ModelFile:
    info = model.info
    return pb.ModelFile(
        id=model.id,
        ref=model.ref,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        aliases=list(model.aliases),
        architecture=info.architecture,
        trained_context=info.context_length,
        weight_bytes=info.weight_bytes,
        block_count=info.block_count,
        embedding_length=info.embedding_length,
        head_count=info.head_count,
        head_count_kv=info.head_count_kv,
        key_length=info.key_length,
        value_length=info.value_length,
        feed_forward_length=info.feed_forward_length,
        vocab_size=info.vocab_size,
        sliding_window=info.sliding_window,
        swa_layers=list(info.swa_layers),
        layer_kv_heads=list(info.layer_kv_heads),
    )


def inventory_to_wire(
    inventory: Inventory, engines: list[str], models: list[LocalModel]
) -> pb.Inventory:
    return pb.Inventory(
        devices=[
            pb.Device(
                id=d.id,
                kind=d.kind,
                name=d.name,
                memory_total_bytes=d.memory_total_bytes,
                memory_free_bytes=d.memory_free_bytes,
                compute_capability=d.compute_capability,
                simulated=d.simulated,
                cordoned=d.cordoned,
                foreign_processes=[
                    pb.GpuProcess(pid=p.pid, memory_bytes=p.memory_bytes)
                    for p in d.foreign_processes
                ],
            )
            for d in inventory.devices
        ],
        cpu_cores=inventory.cpu_cores,
        ram_total_bytes=inventory.ram_total_bytes,
        ram_free_bytes=inventory.ram_free_bytes,
        engines=engines,
        model_files=sorted({m.sha256 for m in models}),
        models=[_model_to_wire(m) for m in models],
    )


def pool_to_wire(status: PoolStatus) -> pb.PoolStatus:
    return pb.PoolStatus(
        pool_id=status.pool_id,
        state=status.state,
        ready=status.ready,
        draining=status.draining,
        engine=status.engine,
        engine_version=status.engine_version,
        adapter=status.adapter,
        model_id=status.model_id,
        model_digest=status.model_digest,
        model_aliases=list(status.model_aliases),
        ctx=status.ctx,
        slots_total=status.slots_total,
        slots_busy=status.slots_busy,
        last_error=status.last_error,
        restarts=status.restarts,
        features=list(status.features),
        device=status.device,
        deployment=status.deployment,
        memory_estimated_bytes=status.memory_estimated_bytes,
        memory_actual_bytes=status.memory_actual_bytes,
        load_progress=status.load_progress,
        replicas=[
            pb.Replica(
                index=r.index,
                endpoint=r.endpoint,
                ready=r.ready,
                slots_total=r.slots_total,
                incarnation=r.incarnation,
                api_key=r.api_key,
                tls=r.tls,
            )
            for r in status.replicas
        ],
    )
