"""Hugging Face model folders without loading weights (CAT-02, CAT-05).

A model in Hugging Face format is a folder: `config.json`, the weights as one or more
`*.safetensors` files (several are listed by `model.safetensors.index.json`), and the
tokenizer files (`tokenizer.json` and/or `tokenizer.model`, `tokenizer_config.json`,
which may carry a `chat_template`, or a `chat_template.jinja` beside it).

`inspect_hf_folder(path)` reads `config.json` and, of each safetensors file, only the
8-byte header length and the JSON header that follows (tensor names, dtypes, shapes and
offsets; no tensor data is touched) and returns an `HfModelInfo` with the same facts a
`GgufInfo` has (architecture, trained context = `max_position_embeddings`, layers,
heads, head size, parameter count, weight bytes, vocabulary, chat template), plus the
weights' dtype. `sha256_folder(path)` is the folder's digest: sha256 over the sorted
relative paths of its files, each with its own sha256, so the same files give the same
digest wherever the folder lies. `estimate_hf_memory` is the memory a vLLM load takes.

A broken folder raises `ModelFileError` saying what is wrong: no `config.json`, a
`config.json` that is not a JSON object, no weights, a safetensors header that is
truncated or not JSON, a tensor whose offsets leave the file. Blocking file I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from catalog_core.digest import sha256_file
from catalog_core.errors import ModelFileError
from catalog_core.estimate import MemoryEstimate

__all__ = [
    "HfModelInfo",
    "HfTensor",
    "estimate_hf_memory",
    "inspect_hf_folder",
    "is_hf_folder",
    "read_safetensors_header",
    "sha256_folder",
]

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
# safetensors refuses headers above 100 MB; so do we (a corrupt length is not a 2^63 read).
_MAX_HEADER_BYTES = 100_000_000
# Bytes per element of each safetensors dtype (the format's own list).
DTYPE_BYTES: dict[str, int] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
# config.json's `torch_dtype` / `dtype` names, as safetensors dtypes.
_TORCH_DTYPES = {
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
}


@dataclass(frozen=True, slots=True)
class HfTensor:
    """One tensor of a safetensors header: name, dtype, shape and byte size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class HfModelInfo:
    """Facts read from a Hugging Face model folder. Sizes in bytes, lengths in tokens.

    Field names match `GgufInfo` where the fact is the same, so the estimator and the
    inventory read either. `file_type` is the weights' dtype (`F32`, `BF16`, ...; the
    most common one by bytes), `file_bytes` the size of every file in the folder.
    """

    architecture: str
    model_type: str
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
    feed_forward_length: int = 0
    weight_files: tuple[str, ...] = ()
    embedding_bytes: int = 0
    output_bytes: int = 0
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    layer_kv_heads: tuple[int, ...] = ()
    format: str = "safetensors"

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes in the weights' dtype (keys and values)."""
        element = DTYPE_BYTES.get(self.file_type, 2)
        return (
            self.block_count
            * self.head_count_kv
            * (self.key_length + self.value_length)
            * (element)
        )


def is_hf_folder(path: Path) -> bool:
    """A directory: the catalog treats it as a Hugging Face folder (GGUF is a file)."""
    return path.is_dir()


def read_safetensors_header(path: Path) -> tuple[HfTensor, ...]:
    """The tensors a safetensors file declares; reads its header only.

    ModelFileError when the header length is missing or beyond the file, the header is
    not a JSON object, or a tensor has an unknown dtype, a malformed shape, or offsets
    that leave the data section or disagree with its shape.
    """
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path}: too short for a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES or 8 + length > size:
                raise ModelFileError(f"{path}: safetensors header length {length} exceeds the file")
            raw = handle.read(length)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: safetensors header is not a JSON object")
    data_bytes = size - 8 - length
    return tuple(
        _tensor(path, name, value, data_bytes)
        for name, value in header.items()
        if name != "__metadata__"
    )


def _tensor(path: Path, name: str, value: object, data_bytes: int) -> HfTensor:
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: tensor {name!r} is not described by an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise ModelFileError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise ModelFileError(f"{path}: tensor {name!r} has a malformed shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_bytes
    ):
        raise ModelFileError(f"{path}: tensor {name!r} has offsets outside the file")
    n_bytes = offsets[1] - offsets[0]
    if n_bytes != math.prod(shape) * DTYPE_BYTES[str(dtype)]:
        raise ModelFileError(f"{path}: tensor {name!r} has {n_bytes} bytes for its shape")
    return HfTensor(name, str(dtype), tuple(shape), n_bytes)


def _json_object(path: Path, what: str) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path.parent} has no {what}") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ModelFileError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelFileError(f"{path} is not a JSON object")
    return value


def _weight_files(folder: Path) -> tuple[str, ...]:
    """The safetensors files: the index's, when there is one; else every top-level one."""
    index = folder / INDEX_FILE
    if index.exists():
        weight_map = _json_object(index, INDEX_FILE).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFileError(f"{index} has no weight_map")
        names = sorted({str(file) for file in weight_map.values()})
        for name in names:
            if "/" in name or name in ("", ".", "..") or not (folder / name).is_file():
                raise ModelFileError(f"{index} names {name!r}, which is not in the folder")
        return tuple(names)
    names = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
    if not names:
        raise ModelFileError(f"{folder} holds no *.safetensors weights")
    return tuple(names)


def _int(config: Mapping[str, object], *keys: str, default: int = 0) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _text_config(config: dict[str, object]) -> dict[str, object]:
    """Multimodal configs keep the language model's shape under `text_config`."""
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        text = jinja.read_text(encoding="utf-8")
        return text or None
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    template = _json_object(path, "tokenizer_config.json").get("chat_template")
    if isinstance(template, str) and template:
        return template
    if isinstance(template, list) and template:  # named templates: the default one
        for item in template:
            if isinstance(item, dict) and item.get("name") == "default":
                return str(item.get("template") or "") or None
    return None


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file, sorted; dot-entries skipped
    (hub downloads keep bookkeeping under `.cache/`), symbolic links followed."""
    found: list[tuple[str, Path]] = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found.append((relative.as_posix(), path))
    yield from sorted(found)


def sha256_folder(folder: Path) -> str:
    """Hex sha256 of a folder: over `<relative path>\\0<file sha256>\\n` per file, sorted."""
    if not folder.is_dir():
        raise ModelFileError(f"{folder} is not a folder")
    digest = hashlib.sha256()
    for relative, path in _files(folder):
        digest.update(f"{relative}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def inspect_hf_folder(folder: Path) -> HfModelInfo:
    """Read a Hugging Face model folder's facts; ModelFileError if it is broken."""
    if not folder.is_dir():
        raise ModelFileError(f"{folder} is not a folder")
    config = _text_config(_json_object(folder / CONFIG_FILE, CONFIG_FILE))
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        raise ModelFileError(f"{folder / CONFIG_FILE} names no architectures")
    weight_files = _weight_files(folder)
    tensors = [t for name in weight_files for t in read_safetensors_header(folder / name)]
    if not tensors:
        raise ModelFileError(f"{folder} has safetensors files without tensors")
    by_dtype: dict[str, int] = {}
    for tensor in tensors:
        by_dtype[tensor.dtype] = by_dtype.get(tensor.dtype, 0) + tensor.n_bytes
    declared = config.get("torch_dtype", config.get("dtype"))
    dtype = max(sorted(by_dtype), key=lambda name: by_dtype[name])
    if isinstance(declared, str) and _TORCH_DTYPES.get(declared) in by_dtype:
        dtype = _TORCH_DTYPES[declared]
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    heads = _int(config, "num_attention_heads", "n_head")
    head_dim = _int(config, "head_dim", default=hidden // heads if heads else 0)
    return HfModelInfo(
        architecture=str(architectures[0]),
        model_type=str(config.get("model_type") or ""),
        name=folder.name,
        context_length=_int(config, "max_position_embeddings", "n_positions", "seq_length"),
        block_count=_int(config, "num_hidden_layers", "n_layer"),
        embedding_length=hidden,
        head_count=heads,
        head_count_kv=_int(config, "num_key_value_heads", default=heads),
        key_length=head_dim,
        value_length=head_dim,
        file_type=dtype,
        parameter_count=sum(t.n_elements for t in tensors),
        weight_bytes=sum(t.n_bytes for t in tensors),
        vocab_size=_int(config, "vocab_size"),
        chat_template=_chat_template(folder),
        file_bytes=sum(path.stat().st_size for _, path in _files(folder)),
        feed_forward_length=_int(config, "intermediate_size", "n_inner"),
        weight_files=weight_files,
        embedding_bytes=sum(t.n_bytes for t in tensors if t.name.endswith("embed_tokens.weight")),
        output_bytes=sum(t.n_bytes for t in tensors if t.name == "lm_head.weight"),
        sliding_window=_int(config, "sliding_window") if config.get("use_sliding_window") else 0,
    )


def estimate_hf_memory(
    model: HfModelInfo, *, kv_cache_tokens: int, load_dtype: str | None = None
) -> MemoryEstimate:
    """Bytes a vLLM load of `model` takes: the weights (converted to `load_dtype`, e.g.
    `F32` for `--dtype float32`; default: as stored), a KV cache of `kv_cache_tokens`
    tokens in the same dtype (vLLM sizes its cache up front: `--kv-cache-memory-bytes`
    or its GPU share; pass the tokens that budget buys), and as compute buffer the
    logits of one 512-token chunk in f32 (activations of the tiny and mid-size models
    this is used for are smaller than that)."""
    if kv_cache_tokens < 0:
        raise ValueError("kv_cache_tokens must not be negative")
    dtype = (load_dtype or model.file_type).upper()
    element = DTYPE_BYTES.get(dtype, DTYPE_BYTES.get(model.file_type, 2))
    weights = model.parameter_count * element
    per_token = (
        model.block_count * model.head_count_kv * (model.key_length + model.value_length) * element
    )
    return MemoryEstimate(
        weights=weights,
        kv_cache=per_token * kv_cache_tokens,
        compute_buffer=512 * model.vocab_size * 4,
        overhead=0,
    )
