"""What the model planner needs to know, read from the catalog and the file system.

`gather_facts` looks up the ref's catalog entry, the size of that entry's file, who owns
the wanted model id, and (for `file:` refs) where the path really leads once symlinks
and `..` are resolved. `resolve_roots` resolves the allowed roots once, the same way, so
the planner compares like with like (SEC-03). Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from catalog_core import CatalogStore, FileRef, ModelFileError, ModelRef, inspect_hf_folder

from provisioners.plan import LocalFile, ModelFacts, wanted_model_id

__all__ = ["gather_facts", "resolve_roots"]


def resolve_roots(roots: Iterable[Path]) -> tuple[str, ...]:
    """Allowed roots as absolute paths with symlinks resolved (missing ones kept as is)."""
    return tuple(os.path.realpath(root.expanduser()) for root in roots)


def gather_facts(store: CatalogStore, ref: ModelRef, requested_id: str | None) -> ModelFacts:
    existing = store.model_by_ref(str(ref))
    owner = store.find_model(wanted_model_id(ref, requested_id, existing))
    return ModelFacts(
        existing=existing,
        existing_file_size=_size(Path(existing.local_path)) if existing is not None else None,
        id_owner_ref=owner.ref if owner is not None else None,
        local_file=_local_file(ref.path) if isinstance(ref, FileRef) else None,
    )


def _local_file(path: str) -> LocalFile:
    resolved = os.path.realpath(path)
    if not os.path.lexists(resolved):
        return LocalFile(resolved_path=None, is_regular_file=False)
    return LocalFile(resolved, os.path.isfile(resolved), os.path.isdir(resolved))


def _size(path: Path) -> int | None:
    """Bytes of a model file, or of every file of a model folder (as its entry counts
    them); None when it is not there (or a folder no longer reads as a model)."""
    try:
        if path.is_dir():
            return inspect_hf_folder(path).file_bytes
        return path.stat().st_size
    except (OSError, ModelFileError):
        return None
