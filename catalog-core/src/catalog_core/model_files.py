"""One entry point for both model formats: a GGUF file or a Hugging Face folder.

`inspect_model(path)` reads a folder as Hugging Face (`inspect_hf_folder`) and a file as
GGUF (`inspect_gguf`); `model_digest(path)` is `sha256_folder` or `sha256_file`
accordingly; `model_entry(...)` makes the catalog record of either, so both are
registered, listed and shown the same way (`format` is `gguf` or `safetensors`,
`quantization` the GGUF file type or the safetensors dtype). Blocking file I/O.
"""

from __future__ import annotations

from pathlib import Path

from catalog_core.digest import sha256_file
from catalog_core.entries import ModelEntry
from catalog_core.gguf_meta import GgufInfo, inspect_gguf
from catalog_core.hf_folder import HfModelInfo, inspect_hf_folder, sha256_folder

__all__ = ["ModelInfo", "inspect_model", "model_digest", "model_entry"]

ModelInfo = GgufInfo | HfModelInfo


def inspect_model(path: Path) -> ModelInfo:
    """The facts of a model file or folder; ModelFileError when it is not readable."""
    return inspect_hf_folder(path) if path.is_dir() else inspect_gguf(path)


def model_digest(path: Path) -> str:
    """Hex sha256 of a model file, or the folder digest of a model folder."""
    return sha256_folder(path) if path.is_dir() else sha256_file(path)


def model_entry(
    model_id: str, ref: str, path: Path, info: ModelInfo, sha256: str, *, verified_at_ms: int
) -> ModelEntry:
    """The catalog entry of a verified model (file or folder)."""
    return ModelEntry(
        id=model_id,
        ref=ref,
        local_path=str(path),
        sha256=sha256,
        size=info.file_bytes,
        format=info.format if isinstance(info, HfModelInfo) else "gguf",
        architecture=info.architecture,
        parameter_count=info.parameter_count,
        quantization=info.file_type,
        trained_context=info.context_length,
        layers=info.block_count,
        heads=info.head_count,
        kv_heads=info.head_count_kv,
        head_size=info.key_length,
        chat_template=info.has_chat_template,
        lifecycle="Active",
        verified_at_ms=verified_at_ms,
    )
