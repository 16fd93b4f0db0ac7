"""GGUF metadata without loading weights (CAT-02).

`inspect_gguf(path)` reads the header and tensor table with the `gguf` library (which
memory-maps the file; no tensor data is read) and returns a `GgufInfo` value with the
facts the catalog, the estimator and placement need: architecture, trained context,
layers, heads, head sizes, quantization, parameter count, weight bytes, vocabulary size,
and whether the model carries a chat template. Blocking file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from catalog_core.errors import ModelFileError

__all__ = ["GgufInfo", "inspect_gguf"]


@dataclass(frozen=True, slots=True)
class GgufInfo:
    """Facts read from one GGUF file's header. Sizes in bytes, lengths in tokens."""

    architecture: str
    name: str
    context_length: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    file_type: str
    parameter_count: int
    weight_bytes: int
    vocab_size: int
    chat_template: str | None
    file_bytes: int

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _int(reader: gguf.GGUFReader, key: str, default: int = 0) -> int:
    value = _field(reader, key)
    if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the max
        value = max(value) if value else None
    return default if value is None else int(value)


def _file_type_name(reader: gguf.GGUFReader) -> str:
    code = _field(reader, "general.file_type")
    if code is None:
        return "unknown"
    try:
        return gguf.LlamaFileType(int(code)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type-{int(code)}"


def inspect_gguf(path: Path) -> GgufInfo:
    """Read a GGUF file's metadata; ModelFileError if it is not a readable GGUF model."""
    try:
        reader = gguf.GGUFReader(path, "r")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable GGUF file: {exc}") from exc
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{path} has no general.architecture")
    embedding = _int(reader, f"{arch}.embedding_length")
    heads = _int(reader, f"{arch}.attention.head_count")
    head_size = embedding // heads if heads else 0
    template = _field(reader, "tokenizer.chat_template")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return GgufInfo(
        architecture=arch,
        name=str(_field(reader, "general.name") or path.stem),
        context_length=_int(reader, f"{arch}.context_length"),
        block_count=_int(reader, f"{arch}.block_count"),
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=_int(reader, f"{arch}.attention.head_count_kv", heads),
        key_length=_int(reader, f"{arch}.attention.key_length", head_size),
        value_length=_int(reader, f"{arch}.attention.value_length", head_size),
        file_type=_file_type_name(reader),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        weight_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        vocab_size=len(tokens.data) if tokens is not None else 0,
        chat_template=template if isinstance(template, str) and template else None,
        file_bytes=path.stat().st_size,
    )
