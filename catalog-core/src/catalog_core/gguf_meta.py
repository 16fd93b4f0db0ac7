"""GGUF metadata without loading weights (CAT-02).

`inspect_gguf(path)` memory-maps the file, parses its header and tensor table with
`_gguf_header` (which decodes only the values asked for: the vocabulary is counted, never
read; no tensor data is touched) and returns a `GgufInfo` value with the facts the catalog,
the estimator and placement need: architecture, trained context, layers, heads, head sizes,
feed-forward width, quantization, parameter count, weight bytes (and the share held by the
token embeddings and the output head), vocabulary size, the sliding-window attention layout,
and whether the model carries a chat template. Blocking file I/O, of that one file only;
milliseconds for a header of a few MB. A missing, unreadable, truncated or corrupt file
raises `ModelFileError`.

Sliding-window attention (SWA) is resolved the way llama.cpp resolves it: an explicit
`{arch}.attention.sliding_window_pattern` (per-layer flags, or a period) wins; otherwise
the architectures below use the period and default window hard-coded in llama.cpp's
`src/models/<arch>.cpp`; any other architecture attends over the full context.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gguf

from catalog_core._gguf_header import (
    Buffer,
    FieldValue,
    GgufFormatError,
    GgufHeader,
    Scalar,
    parse_header,
)
from catalog_core.errors import ModelFileError

__all__ = ["GgufInfo", "inspect_gguf"]

# arch: (period, window when the file has none). In each period of layers the last one
# attends over the full context and the others through the window (llama.cpp's
# `set_swa_pattern(period)`). A window of 0 means: SWA only when the file sets one.
_SWA_DEFAULTS: dict[str, tuple[int, int]] = {
    "gemma2": (2, 4096),
    "gemma3": (6, 0),
    "cohere2": (4, 0),
    "gpt-oss": (2, 0),
    "olmo2": (4, 0),
}
# llama.cpp holds per-layer values in arrays of LLAMA_MAX_LAYERS = 512 (llama-hparams.h);
# a block count far beyond that is a corrupt header, and would size the per-layer flags.
_MAX_LAYERS = 1 << 16


@dataclass(frozen=True, slots=True)
class GgufInfo:
    """Facts read from one GGUF file's header. Sizes in bytes, lengths in tokens.

    `layer_kv_heads` is set only when the file gives KV heads per layer (otherwise every
    layer has `head_count_kv`); `swa_layers` flags the layers that attend through the
    `sliding_window`, and is empty when the model has no sliding-window layers.
    `embedding_bytes` is `token_embd.weight`; `output_bytes` is `output.weight`, 0 when
    the output head is tied to the embeddings.
    """

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
    feed_forward_length: int = 0
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    layer_kv_heads: tuple[int, ...] = ()
    embedding_bytes: int = 0
    output_bytes: int = 0

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)


def _whole(key: str, value: Scalar) -> int:
    try:
        return int(value)
    except (ValueError, OverflowError) as exc:
        raise GgufFormatError(f"{key} is not a whole number") from exc


def _int(header: GgufHeader, key: str, default: int = 0) -> int:
    value = _largest(header.value(key))
    return default if value is None else _whole(key, value)


def _largest(value: FieldValue | None) -> Scalar | None:
    """A per-layer array (e.g. head_count_kv) stands for its largest element."""
    if isinstance(value, list):
        return max(value) if value else None
    return value


def _ints(header: GgufHeader, key: str) -> tuple[int, ...]:
    """A per-layer array as a tuple; empty when the key is absent or a single value."""
    value = header.value(key)
    return tuple(_whole(key, v) for v in value) if isinstance(value, list) else ()


def _layer_count(header: GgufHeader, arch: str) -> int:
    layers = _int(header, f"{arch}.block_count")
    if layers > _MAX_LAYERS:
        raise GgufFormatError(f"{arch}.block_count {layers} exceeds {_MAX_LAYERS}")
    return layers


def _tensor_bytes(header: GgufHeader, name: str) -> int:
    return sum(t.n_bytes for t in header.tensors if t.name == name)


def _period_flags(layers: int, period: int) -> tuple[bool, ...]:
    """llama.cpp's `set_swa_pattern(period)`: the last layer of each period is full."""
    return tuple(period == 0 or layer % period < period - 1 for layer in range(layers))


def _swa_layout(header: GgufHeader, arch: str, layers: int) -> tuple[int, tuple[bool, ...]]:
    """(window in tokens, per-layer SWA flags); (0, ()) when no layer uses a window."""
    period, default_window = _SWA_DEFAULTS.get(arch, (0, 0))
    window = _int(header, f"{arch}.attention.sliding_window", default_window)
    if window <= 0:
        return 0, ()
    pattern_key = f"{arch}.attention.sliding_window_pattern"
    pattern = header.value(pattern_key)
    if isinstance(pattern, list):
        flags = tuple(bool(v) for v in pattern[:layers])
    elif arch in _SWA_DEFAULTS:
        file_period = period if pattern is None else _whole(pattern_key, pattern)
        flags = _period_flags(layers, file_period)
    else:
        return 0, ()
    return (window, flags) if any(flags) else (0, ())


def _file_type_name(header: GgufHeader) -> str:
    code = header.value("general.file_type")
    if code is None:
        return "unknown"
    if isinstance(code, list):
        raise GgufFormatError("general.file_type is an array")
    number = _whole("general.file_type", code)
    try:
        return gguf.LlamaFileType(number).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type-{number}"


@contextmanager
def _mapped(path: Path) -> Iterator[Buffer]:
    """The file's bytes, read-only and mapped (mmap refuses an empty file: b"" then)."""
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the open below
        raise GgufFormatError("not a regular file")
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


def inspect_gguf(path: Path) -> GgufInfo:
    """Read a GGUF file's metadata; ModelFileError if it is not a readable GGUF model."""
    try:
        with _mapped(path) as buffer:
            return _info(path, parse_header(buffer), len(buffer))
    except (OSError, GgufFormatError) as exc:
        raise ModelFileError(f"{path} is not a readable GGUF file: {exc}") from exc


def _info(path: Path, header: GgufHeader, file_bytes: int) -> GgufInfo:
    arch = header.value("general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{path} has no general.architecture")
    embedding = _int(header, f"{arch}.embedding_length")
    heads = _int(header, f"{arch}.attention.head_count")
    head_size = embedding // heads if heads else 0
    template = header.value("tokenizer.chat_template")
    layers = _layer_count(header, arch)
    window, swa_layers = _swa_layout(header, arch, layers)
    return GgufInfo(
        architecture=arch,
        name=str(header.value("general.name") or path.stem),
        context_length=_int(header, f"{arch}.context_length"),
        block_count=layers,
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=_int(header, f"{arch}.attention.head_count_kv", heads),
        key_length=_int(header, f"{arch}.attention.key_length", head_size),
        value_length=_int(header, f"{arch}.attention.value_length", head_size),
        file_type=_file_type_name(header),
        parameter_count=sum(t.n_elements for t in header.tensors),
        weight_bytes=sum(t.n_bytes for t in header.tensors),
        vocab_size=header.length("tokenizer.ggml.tokens") or 0,
        chat_template=template if isinstance(template, str) and template else None,
        file_bytes=file_bytes,
        feed_forward_length=_int(header, f"{arch}.feed_forward_length"),
        sliding_window=window,
        swa_layers=swa_layers,
        layer_kv_heads=_ints(header, f"{arch}.attention.head_count_kv"),
        embedding_bytes=_tensor_bytes(header, "token_embd.weight"),
        output_bytes=_tensor_bytes(header, "output.weight"),
    )
