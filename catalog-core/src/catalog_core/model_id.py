"""The catalog id a pool manager gives a model file, from its name (pure).

Shared by pool-managerd and the CLI (`llorch run PATH`, `llorch join --model`), so the
CLI names a model the way its pool manager will without depending on the pool manager.
"""

from __future__ import annotations

import re
from pathlib import PurePath

__all__ = ["model_id_for"]


def model_id_for(path: PurePath) -> str:
    """Catalog id of a model file: its file name without `.gguf`, lower-cased, slugged."""
    stem = path.name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"
