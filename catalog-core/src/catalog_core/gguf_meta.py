"""GGUF metadata without loading weights (CAT-02).

`inspect_gguf(path)` reads the header and tensor table with the `gguf` library (which
memory-maps the file; no tensor data is read) and returns a `GgufInfo` value with the
facts the catalog, the estimator and placement need: architecture, trained context,
layers, heads, head sizes, feed-forward width, quantization, parameter count, weight bytes
(and the share held by the token embeddings and the output head), vocabulary size, the
sliding-window attention layout, and whether the model carries a chat template. Blocking
file I/O.

Sliding-window attention (SWA) is resolved the way llama.cpp resolves it: an explicit
`{arch}.attention.sliding_window_pattern` (per-layer flags, or a period) wins; otherwise
the architectures below use the period and default window hard-coded in llama.cpp's
`src/models/<arch>.cpp`; any other architecture attends over the full context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

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


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _int(reader: gguf.GGUFReader, key: str, default: int = 0) -> int:
    value = _field(reader, key)
    if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the max
        value = max(value) if value else None
    return default if value is None else int(value)


def _ints(reader: gguf.GGUFReader, key: str) -> tuple[int, ...]:
    """A per-layer array as a tuple; empty when the key is absent or a single value."""
    value = _field(reader, key)
    return tuple(int(v) for v in value) if isinstance(value, list) else ()


def _tensor_bytes(reader: gguf.GGUFReader, name: str) -> int:
    return sum(int(t.n_bytes) for t in reader.tensors if t.name == name)


def _period_flags(layers: int, period: int) -> tuple[bool, ...]:
    """llama.cpp's `set_swa_pattern(period)`: the last layer of each period is full."""
    return tuple(period == 0 or layer % period < period - 1 for layer in range(layers))


def _swa_layout(reader: gguf.GGUFReader, arch: str, layers: int) -> tuple[int, tuple[bool, ...]]:
    """(window in tokens, per-layer SWA flags); (0, ()) when no layer uses a window."""
    period, default_window = _SWA_DEFAULTS.get(arch, (0, 0))
    window = _int(reader, f"{arch}.attention.sliding_window", default_window)
    pattern = _field(reader, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and window > 0:
        flags = tuple(bool(v) for v in pattern[:layers])
    elif arch in _SWA_DEFAULTS and window > 0:
        flags = _period_flags(layers, period if pattern is None else int(pattern))
    else:
        return 0, ()
    return (window, flags) if any(flags) else (0, ())


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
    layers = _int(reader, f"{arch}.block_count")
    window, swa_layers = _swa_layout(reader, arch, layers)
    return GgufInfo(
        architecture=arch,
        name=str(_field(reader, "general.name") or path.stem),
        context_length=_int(reader, f"{arch}.context_length"),
        block_count=layers,
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
        feed_forward_length=_int(reader, f"{arch}.feed_forward_length"),
        sliding_window=window,
        swa_layers=swa_layers,
        layer_kv_heads=_ints(reader, f"{arch}.attention.head_count_kv"),
        embedding_bytes=_tensor_bytes(reader, "token_embd.weight"),
        output_bytes=_tensor_bytes(reader, "output.weight"),
    )
