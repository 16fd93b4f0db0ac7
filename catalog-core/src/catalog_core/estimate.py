"""Memory one llama.cpp load needs, from GGUF metadata (CAT-04). Pure: values in, values out.

`estimate_memory(model, config)` returns a `MemoryEstimate` in bytes, split the way
llama.cpp reports its buffers when it loads a model and creates contexts:

- `weights`: the model buffer, i.e. the tensor bytes of the file (memory-mapped, so
  contexts of one process share them);
- `kv_cache`: per layer, cells × KV heads × (key length + value length) × element size of
  the cache type. A context holds `n_ctx` cells in total (`n_seq_max` streams of
  `n_ctx / n_seq_max` cells, or one unified stream). Sliding-window layers live in a
  second, smaller cache of `pad256(min(cells per stream, window × seqs + n_ubatch))`
  cells per stream, unless `swa_full` (llama.cpp's library default) sizes it like the
  other;
- `compute_buffer`: ggml's graph allocator reserves the peak of the worst-case ubatch
  graph (`n_ubatch` tokens, as many outputs): the larger of the attention stage (KQ
  scores, n_kv × n_ubatch × heads in f32, unless flash attention avoids them, plus the
  masks), the feed-forward stage and the output stage (logits, n_vocab × n_ubatch in f32);
- `overhead`: the host output buffer (logits of one token per sequence) plus whatever
  the caller passes for the runtime around llama.cpp (e.g. a CUDA context);
- `total`: their sum.

With `offload` (every layer on one GPU) the estimate is of that GPU's memory: the
weights are copied into device memory once per loaded model — so under the per-slot
layout, where every slot loads its own `Llama`, once per slot (on a CPU the file is
memory-mapped and shared) — the KV cache and compute buffer are llama.cpp's CUDA
buffers (measured equal on an H100: model 1922.26 MiB + 2.00 MiB of token embeddings
kept on the host, KV 128 MiB, compute 88.01 MiB for the 1B f16 model of
bench/gpu_llamacpp.py at ctx 2048), the host output buffer is not counted, and the
caller's `runtime_overhead_bytes` stands for the CUDA context and libraries.

Sizes are bytes; `ctx` is tokens per slot. Recurrent and hybrid architectures (Mamba,
RWKV, ...), repacked CPU weights (`CPU_REPACK`, a few percent on AVX machines) and
partial offload are not modelled; README.md gives the measured error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

__all__ = [
    "ContextLayout",
    "KvCacheType",
    "LoadConfig",
    "MemoryEstimate",
    "ModelShape",
    "estimate_memory",
]

_F32_BYTES = 4
_F16_BYTES = 2
_CELL_PAD = 256  # llama.cpp pads n_ctx, per-stream cells and the SWA cache to 256 cells


class KvCacheType(StrEnum):
    """Element type of the KV cache (llama.cpp's `type_k` / `type_v`)."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    Q5_1 = "q5_1"
    Q5_0 = "q5_0"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"
    IQ4_NL = "iq4_nl"


# (elements per block, bytes per block), from ggml's type traits.
_BLOCKS: dict[KvCacheType, tuple[int, int]] = {
    KvCacheType.F32: (1, 4),
    KvCacheType.F16: (1, 2),
    KvCacheType.BF16: (1, 2),
    KvCacheType.Q8_0: (32, 34),
    KvCacheType.Q5_1: (32, 24),
    KvCacheType.Q5_0: (32, 22),
    KvCacheType.Q4_1: (32, 20),
    KvCacheType.Q4_0: (32, 18),
    KvCacheType.IQ4_NL: (32, 18),
}


class ContextLayout(StrEnum):
    """How the slots map onto llama.cpp contexts.

    `shared`: one context serves every slot, `n_ctx = ctx × slots` and `n_seq_max =
    slots` (llama-server `--parallel`). `per-slot`: one context of `ctx` per slot, as
    llorch's in-process worker creates one `Llama` per slot; the weights are mapped once.
    """

    SHARED = "shared"
    PER_SLOT = "per-slot"


class ModelShape(Protocol):
    """The model facts the estimate reads; `GgufInfo` provides them."""

    @property
    def weight_bytes(self) -> int: ...
    @property
    def block_count(self) -> int: ...
    @property
    def embedding_length(self) -> int: ...
    @property
    def head_count(self) -> int: ...
    @property
    def head_count_kv(self) -> int: ...
    @property
    def key_length(self) -> int: ...
    @property
    def value_length(self) -> int: ...
    @property
    def feed_forward_length(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def sliding_window(self) -> int: ...
    @property
    def swa_layers(self) -> tuple[bool, ...]: ...
    @property
    def layer_kv_heads(self) -> tuple[int, ...]: ...


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How the engine loads the model. `ctx` is tokens per slot; batches in tokens.

    Defaults are llama-cpp-python's `Llama(...)` defaults (f16 cache, batch 512, flash
    attention off, full-size SWA cache, one stream per sequence); llama-server uses
    `swa_full=False`. `runtime_overhead_bytes` is added once per process.
    """

    ctx: int
    slots: int = 1
    kv_type: KvCacheType = KvCacheType.F16
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attention: bool = False
    swa_full: bool = True
    kv_unified: bool = False
    layout: ContextLayout = ContextLayout.SHARED
    runtime_overhead_bytes: int = 0
    offload: bool = False  # every layer on one GPU: the estimate is of its memory

    def __post_init__(self) -> None:
        if min(self.ctx, self.slots, self.n_batch, self.n_ubatch) < 1:
            raise ValueError("ctx, slots, n_batch and n_ubatch must be at least 1")
        if self.runtime_overhead_bytes < 0:
            raise ValueError("runtime_overhead_bytes must not be negative")


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes one load takes, by llama.cpp buffer; `total` is their sum."""

    weights: int
    kv_cache: int
    compute_buffer: int
    overhead: int
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "total", self.weights + self.kv_cache + self.compute_buffer + self.overhead
        )


@dataclass(frozen=True, slots=True)
class _Context:
    """One llama.cpp context as `llama_context`'s constructor sizes it."""

    n_seq_max: int
    streams: int  # KV streams: one per sequence, or one when unified
    cells: int  # per stream, base (full-attention) cache
    swa_cells: int  # per stream, sliding-window cache
    n_ubatch: int  # tokens in the worst-case graph the compute buffer is reserved for


def _pad(value: int, to: int = _CELL_PAD) -> int:
    return -(-value // to) * to


def _context(model: ModelShape, config: LoadConfig) -> _Context:
    seqs = config.slots if config.layout is ContextLayout.SHARED else 1
    requested = config.ctx * seqs
    n_batch = min(requested, config.n_batch)  # capped before n_ctx is padded
    n_ubatch = min(n_batch, config.n_ubatch)
    n_ctx = _pad(requested)
    streams = 1 if config.kv_unified else seqs
    cells = n_ctx if config.kv_unified else _pad(n_ctx // seqs)
    swa_cells = cells
    if model.sliding_window and not config.swa_full:
        window_cells = model.sliding_window * (seqs if config.kv_unified else 1) + n_ubatch
        swa_cells = _pad(min(cells, window_cells))
    return _Context(seqs, streams, cells, swa_cells, n_ubatch)


def _kv_heads(model: ModelShape, layer: int) -> int:
    if layer < len(model.layer_kv_heads):
        return model.layer_kv_heads[layer]
    return model.head_count_kv


def _is_swa(model: ModelShape, layer: int) -> bool:
    return layer < len(model.swa_layers) and model.swa_layers[layer]


def _cache_bytes(elements: int, kv_type: KvCacheType) -> int:
    per_block, block_bytes = _BLOCKS[kv_type]
    return -(-elements // per_block) * block_bytes


def _kv_cache_bytes(model: ModelShape, ctx: _Context, kv_type: KvCacheType) -> int:
    total = 0
    for layer in range(model.block_count):
        cells = ctx.swa_cells if _is_swa(model, layer) else ctx.cells
        heads = _kv_heads(model, layer)
        keys = _cache_bytes(heads * model.key_length, kv_type)
        values = _cache_bytes(heads * model.value_length, kv_type)
        total += ctx.streams * cells * (keys + values)
    return total


def _mask_bytes(model: ModelShape, ctx: _Context, flash_attention: bool) -> int:
    """The KQ masks: one per cache, n_kv × n_ubatch, f16 under flash attention."""
    swa = [_is_swa(model, layer) for layer in range(model.block_count)]
    kv_per_token = (ctx.cells if not all(swa) else 0) + (ctx.swa_cells if any(swa) else 0)
    return kv_per_token * ctx.n_ubatch * (_F16_BYTES if flash_attention else _F32_BYTES)


def _attention_stage(model: ModelShape, ctx: _Context, flash_attention: bool) -> int:
    heads, kv_heads = model.head_count, model.head_count_kv
    vectors = (
        2 * model.embedding_length  # the residual stream and its norm
        + heads * (model.key_length + model.value_length)  # Q and the attention output
        + kv_heads * (model.key_length + model.value_length)  # K and V before caching
    )
    scores = 0 if flash_attention else max(ctx.cells, ctx.swa_cells) * heads
    return (scores + vectors) * ctx.n_ubatch * _F32_BYTES


def _feed_forward_stage(model: ModelShape, ctx: _Context) -> int:
    # gate, up and their product; residual, norm, input and output of the block
    vectors = 3 * model.feed_forward_length + 4 * model.embedding_length
    return vectors * ctx.n_ubatch * _F32_BYTES


def _output_stage(model: ModelShape, ctx: _Context) -> int:
    # every token of the worst-case ubatch is an output (n_outputs_max = n_batch)
    return (model.vocab_size + 2 * model.embedding_length) * ctx.n_ubatch * _F32_BYTES


def _compute_buffer_bytes(model: ModelShape, ctx: _Context, flash_attention: bool) -> int:
    masks = _mask_bytes(model, ctx, flash_attention)
    return max(
        masks + _attention_stage(model, ctx, flash_attention),
        masks + _feed_forward_stage(model, ctx),
        _output_stage(model, ctx),
    )


def _output_buffer_bytes(model: ModelShape, ctx: _Context) -> int:
    """Host logits reserved at creation: one row per sequence (grows on demand)."""
    return model.vocab_size * ctx.n_seq_max * _F32_BYTES


def estimate_memory(model: ModelShape, config: LoadConfig) -> MemoryEstimate:
    """Bytes a llama.cpp load of `model` with `config` takes, split by buffer."""
    ctx = _context(model, config)
    contexts = config.slots if config.layout is ContextLayout.PER_SLOT else 1
    host_output = 0 if config.offload else contexts * _output_buffer_bytes(model, ctx)
    return MemoryEstimate(
        weights=model.weight_bytes * (contexts if config.offload else 1),
        kv_cache=contexts * _kv_cache_bytes(model, ctx, config.kv_type),
        compute_buffer=contexts * _compute_buffer_bytes(model, ctx, config.flash_attention),
        overhead=host_output + config.runtime_overhead_bytes,
    )
