"""Catalog records (CAT-02, CAT-03): what was fetched (`ModelEntry`) and what was
provisioned (`EngineEntry`). Frozen values; the store persists them. `engine_build_key`
names a build by its inputs so an engine built once from the same source and flags is
found again instead of rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EngineEntry", "EngineMode", "Lifecycle", "ModelEntry", "engine_build_key"]

Lifecycle = Literal["Active", "Retired"]
EngineMode = Literal["source", "package", "binary", "container"]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model file in the local catalog. Sizes in bytes; context in tokens."""

    id: str
    ref: str
    local_path: str
    sha256: str
    size: int
    format: str = "gguf"
    architecture: str = ""
    parameter_count: int = 0
    quantization: str = ""
    trained_context: int = 0
    layers: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_size: int = 0
    chat_template: bool = False
    lifecycle: Lifecycle = "Active"
    verified_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class EngineEntry:
    """A provisioned engine: a binary, a managed venv, or a container image."""

    id: str
    engine: str
    version: str
    mode: EngineMode
    artifact: str
    digest: str = ""
    build_ref: str = ""
    flags: tuple[str, ...] = ()
    created_at_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    build_key: str = ""


def engine_build_key(engine: str, source_digest: str, flags: Sequence[str]) -> str:
    """Hex sha256 naming a build by its inputs: engine, source digest and flags in order.

    Flags keep their order (a build tool may care); the same flags in another order give
    another key, which only costs a rebuild.
    """
    canonical = json.dumps([engine, source_digest, list(flags)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
