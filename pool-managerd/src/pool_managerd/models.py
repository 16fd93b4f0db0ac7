"""The model files this host holds, so deployments can be placed and started here.

Sources: the `models:` entries of the config, and the Active entries of the host's local
catalog (`state_dir/catalog.sqlite`, written by `llorch provision model`). Each file is
inspected once at start (GGUF or Hugging Face folder shape facts, sha256 or folder digest —
checked when the config gives one)
and reported in the inventory, so the orchestrator can estimate a pool's memory before
any pool exists; the catalog is read again when it changes (`with_new_catalog_entries`,
driven by the manager), so a model provisioned while the pool manager runs (`llorch run
URL`) is offered without a restart. `resolve(ref)` turns the model reference of a
Preload (catalog id, alias, or `file:` path of a known file) into a local path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from catalog_core import CatalogError, CatalogStore, ModelInfo, inspect_model, model_digest

from pool_managerd.config import ModelConfig

__all__ = ["LocalModel", "LocalModels", "ModelNotHere"]

log = logging.getLogger("pool_managerd.models")


class ModelNotHere(LookupError):
    """The host does not hold the model a Preload asked for."""


@dataclass(frozen=True, slots=True)
class LocalModel:
    id: str
    path: Path
    sha256: str
    size_bytes: int
    aliases: tuple[str, ...]
    info: ModelInfo  # a GGUF file's or a Hugging Face folder's facts

    @property
    def ref(self) -> str:
        return f"file:{self.path}"


def _load(config: ModelConfig) -> LocalModel | None:
    path = Path(config.path).expanduser().resolve()
    try:
        info = inspect_model(path)
        digest = model_digest(path)
    except (CatalogError, OSError) as exc:
        log.error(
            "model %s at %s is unusable: %s",
            config.id,
            path,
            exc,
            extra={"action": "inventory", "target": config.id},
        )
        return None
    if config.sha256 and config.sha256.lower() != digest:
        log.error(
            "model %s: sha256 is %s, expected %s; not offered",
            config.id,
            digest,
            config.sha256.lower(),
            extra={"action": "inventory", "target": config.id},
        )
        return None
    return LocalModel(config.id, path, digest, info.file_bytes, config.aliases, info)


def _catalog_entries(state_dir: Path) -> list[ModelConfig]:
    path = state_dir / "catalog.sqlite"
    if not path.exists():
        return []
    try:
        store = CatalogStore(path)
    except CatalogError as exc:
        log.error("local catalog %s unreadable: %s", path, exc, extra={"action": "inventory"})
        return []
    try:
        entries, cursor = [], None
        while True:
            page = store.list_models(after=cursor, limit=200)
            entries += [
                ModelConfig(e.id, e.local_path, e.sha256)
                for e in page.items
                if e.lifecycle == "Active"
            ]
            if page.next_cursor is None:
                return entries
            cursor = page.next_cursor
    finally:
        store.close()


class LocalModels:
    def __init__(self, models: list[LocalModel]) -> None:
        self._models = {m.id: m for m in models}

    @classmethod
    def load(cls, configs: tuple[ModelConfig, ...], state_dir: Path) -> LocalModels:
        """Inspect every model (blocking file I/O and hashing: call from a thread)."""
        seen: dict[str, ModelConfig] = {c.id: c for c in _catalog_entries(state_dir)}
        seen.update({c.id: c for c in configs})
        return cls([m for m in (_load(c) for c in seen.values()) if m is not None])

    def with_new_catalog_entries(self, state_dir: Path) -> LocalModels:
        """These models plus the local catalog's Active entries not yet known (each new
        file inspected and hashed: blocking, call from a thread). Additive: an entry
        retired or removed since stays offered until the pool manager restarts."""
        new = [c for c in _catalog_entries(state_dir) if c.id not in self._models]
        added = [m for m in (_load(c) for c in new) if m is not None]
        for model in added:
            log.info(
                "model %s offered (new in the local catalog)",
                model.id,
                extra={"action": "inventory", "target": model.id},
            )
        return LocalModels([*self._models.values(), *added]) if added else self

    def all(self) -> list[LocalModel]:
        return sorted(self._models.values(), key=lambda m: m.id)

    def resolve(self, ref: str) -> LocalModel:
        """The local model named by id, alias, `file:` path or sha256; ModelNotHere else."""
        wanted = ref.removeprefix("file:")
        for model in self._models.values():
            if ref in (model.id, model.sha256, model.ref) or ref in model.aliases:
                return model
            if wanted.startswith("/") and Path(wanted).resolve() == model.path:
                return model
        raise ModelNotHere(f"this host holds no model {ref!r}")
