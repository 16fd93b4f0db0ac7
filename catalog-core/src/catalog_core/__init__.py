"""Model and engine catalog: GGUF inspection, fixture models, digests.

Public surface: `inspect_gguf` / `GgufInfo` (CAT-02 metadata without loading weights),
`write_tiny_model` / `TinyModelSpec` (deterministic test models), `sha256_file` /
`verify_sha256`, and the error tree in `catalog_core.errors`.
"""

from __future__ import annotations

from catalog_core.digest import sha256_file, verify_sha256
from catalog_core.entries import EngineEntry, EngineMode, Lifecycle, ModelEntry
from catalog_core.errors import CatalogError, DigestMismatch, ModelFileError
from catalog_core.fixtures import TinyModelSpec, write_tiny_model
from catalog_core.gguf_meta import GgufInfo, inspect_gguf

__all__ = [
    "CatalogError",
    "DigestMismatch",
    "EngineEntry",
    "EngineMode",
    "Lifecycle",
    "ModelEntry",
    "GgufInfo",
    "ModelFileError",
    "TinyModelSpec",
    "inspect_gguf",
    "sha256_file",
    "verify_sha256",
    "write_tiny_model",
]
