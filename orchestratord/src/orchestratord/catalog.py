"""The fleet's model catalog (API-12): every model file some host reports, with its
lifecycle kept by the orchestrator.

Entries come from the hosts' inventories (id, ref, digest, size, shape) and are recorded
in the orchestrator's own catalog store (`state_dir/catalog.sqlite`, CAT-01), which
keeps what the hosts cannot: `Active`/`Retired` and when the model was last verified.
A Retired model gets no new jobs. Blocking SQLite calls are short and run on the event
loop only at control-plane rates (never per token).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from catalog_core import CatalogError, CatalogStore, Lifecycle, ModelEntry

from orchestratord.registry import PoolRegistry

__all__ = ["FleetCatalog", "FleetModel"]


@dataclass(frozen=True, slots=True)
class FleetModel:
    entry: ModelEntry
    hosts: tuple[str, ...]
    aliases: tuple[str, ...]


class FleetCatalog:
    def __init__(self, registry: PoolRegistry, path: Path) -> None:
        self._registry = registry
        path.parent.mkdir(parents=True, exist_ok=True)
        self._store = CatalogStore(path)

    def close(self) -> None:
        self._store.close()

    def _reported(self) -> dict[str, FleetModel]:
        found: dict[str, FleetModel] = {}
        for host in self._registry.hosts():
            for model in host.inventory.models:
                current = found.get(model.id)
                entry = ModelEntry(
                    id=model.id,
                    ref=model.ref,
                    local_path="",
                    sha256=model.sha256,
                    size=model.size_bytes,
                    architecture=model.architecture,
                    trained_context=model.trained_context,
                    layers=model.block_count,
                    heads=model.head_count,
                    kv_heads=model.head_count_kv,
                    head_size=model.key_length,
                )
                hosts = (*current.hosts, host.host_id) if current else (host.host_id,)
                aliases = tuple(
                    sorted(set(current.aliases if current else ()) | set(model.aliases))
                )
                found[model.id] = FleetModel(current.entry if current else entry, hosts, aliases)
        return found

    def _merge(self, model: FleetModel) -> FleetModel:
        stored = self._store.find_model(model.entry.id)
        if stored is None:
            try:
                self._store.put_model(model.entry)
            except CatalogError:
                return model
            return model
        entry = replace(
            model.entry, lifecycle=stored.lifecycle, verified_at_ms=stored.verified_at_ms
        )
        return replace(model, entry=entry)

    def models(self) -> list[FleetModel]:
        return [self._merge(m) for _, m in sorted(self._reported().items())]

    def get(self, model_id: str) -> FleetModel | None:
        model = self._reported().get(model_id)
        return None if model is None else self._merge(model)

    def set_state(self, model_id: str, lifecycle: Lifecycle) -> FleetModel | None:
        model = self.get(model_id)
        if model is None:
            return None
        self._store.set_lifecycle(model_id, lifecycle)
        return self.get(model_id)

    def mark_verified(self, model_id: str, at_ms: int) -> None:
        if self._store.find_model(model_id) is not None:
            self._store.mark_verified(model_id, at_ms)

    def retired(self, name: str) -> bool:
        """Whether `name` (a model id or alias) names a Retired model."""
        for model in self._reported().values():
            if name == model.entry.id or name in model.aliases:
                stored = self._store.find_model(model.entry.id)
                return stored is not None and stored.lifecycle == "Retired"
        return False
