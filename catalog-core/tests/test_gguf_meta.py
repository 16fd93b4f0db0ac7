"""GGUF facts the memory estimator reads: feed-forward width, tensor shares, SWA layout.

Gemma 3's own file is checked in test_estimate.py, which has it inspected already.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import pytest
from catalog_core import TinyModelSpec, inspect_gguf, write_tiny_model


def test_a_llama_fixture_has_no_window_and_separate_output_head(tmp_path: Path) -> None:
    spec = TinyModelSpec(layers=3, dims=128, ffn=384)
    info = inspect_gguf(write_tiny_model(tmp_path / "m.gguf", spec))
    assert (info.sliding_window, info.swa_layers) == (0, ())
    assert info.feed_forward_length == 384
    assert info.embedding_bytes == info.output_bytes == spec.vocab_size * spec.dims * 4


def _header_only(
    path: Path, arch: str, window: int | None, pattern: int | Sequence[bool] | None
) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(4)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    if window is not None:
        writer.add_sliding_window(window)
    if pattern is not None:
        writer.add_sliding_window_pattern(pattern)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


SWA_LAYOUTS = [
    # arch, window key, pattern key, expected window, expected per-layer flags
    ("gemma2", None, None, 4096, (True, False, True, False)),  # llama.cpp's gemma2 defaults
    ("gemma3", 1024, None, 1024, (True, True, True, True)),  # period 6: no full layer in 4
    ("gemma3", None, None, 0, ()),  # gemma3 without a window attends fully
    ("gemma3", 256, 2, 256, (True, False, True, False)),  # the file's period wins
    ("gemma3", 256, [False, True, True, False], 256, (False, True, True, False)),
    ("llama", 4096, None, 0, ()),  # llama.cpp ignores a window on architectures without SWA
]


@pytest.mark.parametrize(("arch", "window", "pattern", "expected_window", "flags"), SWA_LAYOUTS)
def test_the_sliding_window_layout_follows_llama_cpp(
    tmp_path: Path,
    arch: str,
    window: int | None,
    pattern: int | list[bool] | None,
    expected_window: int,
    flags: tuple[bool, ...],
) -> None:
    info = inspect_gguf(_header_only(tmp_path / "h.gguf", arch, window, pattern))
    assert (info.sliding_window, info.swa_layers) == (expected_window, flags)
