"""The fleet's model catalog (API-12): every model file some host reports, with its
lifecycle kept by the orchestrator.

Entries come from the hosts' inventories (id, ref, digest, size, shape) and are recorded
in the orchestrator's own catalog store (`state_dir/catalog.sqlite`, CAT-01), which
keeps what the hosts cannot: `Active`/`Retired` and when the model was last verified.
A Retired model gets no new jobs. Blocking SQLite calls are short and run on the event
loop only at control-plane rates (never per request or token: admission reads the
Retired ids from memory).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from catalog_core import CatalogError, CatalogStore, Lifecycle, ModelEntry

from orchestratord.registry import PoolRegistry

__all__ = ["FleetCatalog", "FleetModel"]

_REREAD_S = 1.0


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
        # Ids of Retired models, kept in memory: admission asks `retired` for every task,
        # so the store is read at most once a second (another process may write the
        # file: `llorch catalog retire --catalog`), not per request.
        self._retired: set[str] = set()
        self._retired_read_at = -_REREAD_S
        self._read_retired()

    def _read_retired(self) -> None:
        retired: set[str] = set()
        after: str | None = None
        while True:
            page = self._store.list_models(after=after, limit=500, lifecycle="Retired")
            retired.update(entry.id for entry in page.items)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        self._retired = retired
        self._retired_read_at = time.monotonic()

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
        if lifecycle == "Retired":
            self._retired.add(model_id)
        else:
            self._retired.discard(model_id)
        return self.get(model_id)

    def mark_verified(self, model_id: str, at_ms: int) -> None:
        if self._store.find_model(model_id) is not None:
            self._store.mark_verified(model_id, at_ms)

    def retired(self, name: str) -> bool:
        """Whether `name` (a model id or alias) names a Retired model."""
        if time.monotonic() - self._retired_read_at > _REREAD_S:
            self._read_retired()
        if not self._retired:
            return False
        for model in self._reported().values():
            if name == model.entry.id or name in model.aliases:
                return model.entry.id in self._retired
        return False
