"""Model and engine catalog: entries, refs, GGUF inspection, fixture models, the store.

Public surface: `ModelEntry` / `EngineEntry` (CAT-02, CAT-03) and `engine_build_key`;
`parse_model_ref` / `ModelRef` (`FileRef`, `HfRef`, `HttpRef`); `CatalogStore` / `Page`
(CAT-01, the SQLite store; `SCHEMA_VERSION` is the schema it writes); `inspect_gguf` /
`GgufInfo` (metadata without loading weights); `inspect_hf_folder` / `HfModelInfo` /
`sha256_folder` / `estimate_hf_memory` (Hugging Face folders: config.json, safetensors
headers, tokenizer files); `inspect_model` / `model_digest` / `model_entry` (either
format); `estimate_memory` / `LoadConfig` /
`MemoryEstimate` (CAT-04, the bytes a llama.cpp load takes); `write_tiny_model` /
`TinyModelSpec` and `write_tiny_hf_model` / `TinyHfModelSpec` (deterministic test
models); `sha256_file` / `verify_sha256`; and the
error tree in `catalog_core.errors`.
"""

from __future__ import annotations

from catalog_core.digest import sha256_file, verify_sha256
from catalog_core.entries import (
    EngineEntry,
    EngineMode,
    Lifecycle,
    ModelEntry,
    engine_build_key,
)
from catalog_core.errors import (
    CatalogError,
    DigestMismatch,
    DuplicateEntry,
    EntryNotFound,
    InvalidModelRef,
    ModelFileError,
    SchemaTooNew,
    StoreBusy,
    StoreCorrupt,
    StoreError,
)
from catalog_core.estimate import (
    ContextLayout,
    KvCacheType,
    LoadConfig,
    MemoryEstimate,
    ModelShape,
    estimate_memory,
)
from catalog_core.fixtures import (
    TinyHfModelSpec,
    TinyModelSpec,
    write_tiny_hf_model,
    write_tiny_model,
)
from catalog_core.gguf_meta import GgufInfo, inspect_gguf
from catalog_core.hf_folder import (
    HfModelInfo,
    estimate_hf_memory,
    inspect_hf_folder,
    sha256_folder,
)
from catalog_core.migrations import SCHEMA_VERSION
from catalog_core.model_files import ModelInfo, inspect_model, model_digest, model_entry
from catalog_core.refs import FileRef, HfRef, HttpRef, ModelRef, parse_model_ref
from catalog_core.store import CatalogStore, Page

__all__ = [
    "SCHEMA_VERSION",
    "CatalogError",
    "CatalogStore",
    "ContextLayout",
    "DigestMismatch",
    "DuplicateEntry",
    "EngineEntry",
    "EngineMode",
    "EntryNotFound",
    "FileRef",
    "GgufInfo",
    "HfModelInfo",
    "HfRef",
    "HttpRef",
    "InvalidModelRef",
    "KvCacheType",
    "Lifecycle",
    "LoadConfig",
    "MemoryEstimate",
    "ModelEntry",
    "ModelFileError",
    "ModelInfo",
    "ModelRef",
    "ModelShape",
    "Page",
    "SchemaTooNew",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "TinyHfModelSpec",
    "TinyModelSpec",
    "engine_build_key",
    "estimate_hf_memory",
    "estimate_memory",
    "inspect_gguf",
    "inspect_hf_folder",
    "inspect_model",
    "model_digest",
    "model_entry",
    "parse_model_ref",
    "sha256_file",
    "sha256_folder",
    "verify_sha256",
    "write_tiny_hf_model",
    "write_tiny_model",
]
